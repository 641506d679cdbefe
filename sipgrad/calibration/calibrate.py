"""Computing SIP calibration statistics over a labelled image set.

Forward passes only, batched. Memory stays bounded whatever the data set size:
per-class sums and sums of squares (float64, shifted for accuracy) give means,
standard deviations and the Welch tests in closed form; a bottom-k reservoir keeps
at most ``reservoir_size`` GAP vectors per layer for Shapiro-Wilk (scipy's limit is
5000). Each sample's reservoir priority is a hash of its position, so a run that is
interrupted and resumed from its checkpoint ends with exactly the same statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sipgrad.calibration.stats import (
    LayerStatistics,
    SIPStatistics,
    layer_fingerprint,
    npz_problem,
)
from sipgrad.calibration.welch import shapiro_pvalues, welch_greater_pvalues
from sipgrad.errors import ImageLoadError
from sipgrad.io.atomic import atomic_write
from sipgrad.io.images import load_image
from sipgrad.models.inference import evaluation_mode
from sipgrad.models.registry import Classifier

RESERVOIR_SIZE = 5000


def _priorities(indices: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random priorities in [0, 1) (splitmix64 of seed and index)."""
    with np.errstate(over="ignore"):
        z = indices.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class ChannelAccumulator:
    """Streaming per-class moments and a bounded sample of one layer's GAP values."""

    count: np.ndarray  # (K,)
    total: np.ndarray  # (K, C)
    total_sq: np.ndarray  # (K, C)
    shift: np.ndarray  # (C,)
    reservoir: np.ndarray  # (R, C)
    priority: np.ndarray  # (R,)

    @classmethod
    def empty(cls, channels: int, classes: int) -> "ChannelAccumulator":
        return cls(np.zeros(classes), np.zeros((classes, channels)), np.zeros((classes, channels)),
                   np.full(channels, np.nan), np.zeros((0, channels), np.float32), np.zeros(0))

    def update(self, values: np.ndarray, labels: np.ndarray, priorities: np.ndarray, reservoir_size: int) -> None:
        values = values.astype(np.float64)
        if np.isnan(self.shift).all():
            self.shift = values.mean(axis=0)
        shifted = values - self.shift
        np.add.at(self.count, labels, 1)
        np.add.at(self.total, labels, shifted)
        np.add.at(self.total_sq, labels, shifted * shifted)
        pool = np.concatenate([self.reservoir, values.astype(np.float32)])
        pool_priority = np.concatenate([self.priority, priorities])
        if len(pool_priority) > reservoir_size:
            keep = np.argpartition(pool_priority, reservoir_size - 1)[:reservoir_size]
            keep.sort()
            pool, pool_priority = pool[keep], pool_priority[keep]
        self.reservoir, self.priority = pool, pool_priority

    def finish(self) -> LayerStatistics:
        n = self.count.sum()
        mean_shifted = self.total.sum(axis=0) / n
        var = (self.total_sq.sum(axis=0) - n * mean_shifted ** 2) / max(n - 1, 1)
        return LayerStatistics(mean=mean_shifted + self.shift, std=np.sqrt(np.maximum(var, 0.0)),
                               shapiro=shapiro_pvalues(self.reservoir),
                               class_pvalues=welch_greater_pvalues(self.count, self.total, self.total_sq),
                               count=int(n))


@contextlib.contextmanager
def capture_gap(module: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record GAP(ReLU(output)) (B x C) of each named layer during forward passes."""
    captured: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    handles = []
    for name in layers:
        def hook(_m, _i, output, name=name):
            captured[name] = output.detach().clamp_min(0).mean(dim=(2, 3))
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _signature(model_name: str, layers: Sequence[str], fingerprint: str, items: Sequence[tuple[Path, int]],
               crop: bool, seed: int) -> str:
    digest = hashlib.sha256(f"{model_name}|{','.join(layers)}|{fingerprint}|{crop}|{seed}".encode())
    for path, label in items:
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


def _save_checkpoint(path: Path, signature: str, done: int, skipped: int, accumulators: dict[str, ChannelAccumulator],
                     layers: Sequence[str]) -> None:
    arrays = {"signature": np.array(signature), "done": np.array(done), "skipped": np.array(skipped)}
    for i, name in enumerate(layers):
        for field in ("count", "total", "total_sq", "shift", "reservoir", "priority"):
            arrays[f"{i}/{field}"] = getattr(accumulators[name], field)
    with atomic_write(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def _load_checkpoint(path: Path, signature: str, layers: Sequence[str]):
    """The checkpoint's (done, skipped, accumulators), or None when it is absent, made with other
    arguments, or unreadable (e.g. cut short by a full disk): then the pass starts over, with a warning."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["signature"]) != signature:
                warnings.warn(f"{path}: checkpoint of a run with other arguments (data, model, layers or "
                              f"options); starting over", stacklevel=3)
                return None
            accumulators = {name: ChannelAccumulator(*(data[f"{i}/{f}"] for f in (
                "count", "total", "total_sq", "shift", "reservoir", "priority"))) for i, name in enumerate(layers)}
            return int(data["done"]), int(data["skipped"]), accumulators
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(f"{path}: unreadable checkpoint ({npz_problem(error)}); starting over", stacklevel=3)
        return None


@contextlib.contextmanager
def _interrupt_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise it: for updates that must not stop half-way.

    Only the main thread receives signals, so elsewhere (and where a handler cannot be set) the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class CalibrationInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``calibrate``. ``checkpoint`` is the file this run left with the finished batches (the same
    call resumes from it), or None when no batch had finished: a checkpoint of another run may exist there, but
    this one would start over."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__()
        self.checkpoint = checkpoint


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where ``calibrate`` keeps the progress of a run writing ``out``: ``<out>.partial.npz``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.npz")


def calibrate(classifier: Classifier, items: Sequence[tuple[Path, int]], out: str | os.PathLike,
              layers: Sequence[str] | None = None, batch_size: int = 32, crop: bool = True, seed: int = 0,
              reservoir_size: int = RESERVOIR_SIZE, checkpoint_every: int = 10,
              progress: Callable[[int], None] | None = None, on_skip: Callable[[str], None] | None = None,
              stop_after: int | None = None) -> SIPStatistics | None:
    """Compute and save SIP statistics for ``classifier`` over ``items`` (path, label).

    Progress is checkpointed to ``<out>.partial.npz`` every ``checkpoint_every`` batches
    and on interruption; calling again with the same arguments resumes from it.
    ``stop_after`` (for tests and time-boxed runs) stops after that many batches and
    returns ``None`` with the checkpoint written.
    """
    module = classifier.module
    layers = tuple(layers or classifier.sip_layers or ())
    fingerprint = layer_fingerprint(module, layers)
    out = Path(out)
    checkpoint = checkpoint_path(out)
    signature = _signature(classifier.name, layers, fingerprint, items, crop, seed)
    resumed = _load_checkpoint(checkpoint, signature, layers)
    num_classes = len(classifier.classes)
    if resumed:
        done, skipped, accumulators = resumed
        warnings.warn(f"resuming from {checkpoint}: {done} of {len(items)} images were already done", stacklevel=2)
        if progress:
            progress(done)
    else:
        done, skipped, accumulators = 0, 0, {}
    batches = 0
    try:
        # Eval mode for the pass: BatchNorm's running statistics (and so the model) must not change.
        with torch.inference_mode(), evaluation_mode(module), capture_gap(module, layers) as captured:
            while done < len(items):
                chunk = items[done:done + batch_size]
                tensors, labels, indices, unreadable = [], [], [], 0
                for offset, (path, label) in enumerate(chunk):
                    try:
                        tensors.append(classifier.preprocessing.prepare(load_image(path), crop=crop)[0])
                        labels.append(label)
                        indices.append(done + offset)
                    except ImageLoadError as error:
                        unreadable += 1
                        if on_skip:
                            on_skip(str(error))
                if tensors:
                    module(torch.stack(tensors).to(classifier.device))
                    priorities = _priorities(np.asarray(indices), seed)
                # The accumulators, done and skipped change together, with Ctrl-C held: a checkpoint saved on
                # interruption never holds part of a batch (a resumed run would count it twice).
                with _interrupt_held():
                    if tensors:
                        for name in layers:
                            values = captured[name].float().cpu().numpy()
                            if name not in accumulators:
                                accumulators[name] = ChannelAccumulator.empty(values.shape[1], num_classes)
                            accumulators[name].update(values, np.asarray(labels), priorities, reservoir_size)
                    done += len(chunk)
                    skipped += unreadable
                batches += 1
                if progress:
                    progress(len(chunk))
                if batches % checkpoint_every == 0:
                    _save_checkpoint(checkpoint, signature, done, skipped, accumulators, layers)
                if stop_after is not None and batches >= stop_after:
                    _save_checkpoint(checkpoint, signature, done, skipped, accumulators, layers)
                    return None
    except KeyboardInterrupt:
        if accumulators:
            _save_checkpoint(checkpoint, signature, done, skipped, accumulators, layers)
        raise CalibrationInterrupted(checkpoint if accumulators else None) from None
    if not accumulators:
        from sipgrad.errors import SipgradError

        raise SipgradError("no readable images to calibrate on")
    statistics = SIPStatistics(classifier.name, layers, fingerprint,
                               {name: accumulators[name].finish() for name in layers}, num_classes)
    statistics.save(out)
    checkpoint.unlink(missing_ok=True)
    return statistics
