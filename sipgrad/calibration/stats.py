"""Calibration statistics of hooked channels, and their file format.

Per hooked layer and channel: the mean and standard deviation of GAP(ReLU(A)) over a
calibration set, the Shapiro-Wilk p-value of that distribution, and the one-sided
Welch t-test p-values of "class y activates this channel more than the other classes"
(C x K). Files are ``.npz`` read with ``allow_pickle=False`` (never pickle). A
fingerprint of the hooked layers' names, shapes and weights ties a file to the model
it was made for, so using it with another model is refused.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sipgrad.errors import SipgradError
from sipgrad.io.atomic import atomic_write

FORMAT_VERSION = 1


def layer_fingerprint(model: nn.Module, layers: Sequence[str]) -> str:
    """SHA-256 over the names, shapes and weight bytes of ``layers`` in ``model``."""
    modules = dict(model.named_modules())
    digest = hashlib.sha256()
    for name in layers:
        digest.update(name.encode())
        for param_name, tensor in sorted(modules[name].state_dict().items()):
            array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
            digest.update(f"{param_name}{tuple(array.shape)}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def npz_problem(error: Exception) -> str:
    """Why ``np.load`` refused a file, in words for its user.

    numpy's own message for a file that is not an archive advises loading it with
    ``allow_pickle``, i.e. running whatever code it holds: never pass that on.
    """
    if isinstance(error, (zipfile.BadZipFile, EOFError)) or "pickled" in str(error):
        return "not an .npz archive, or a truncated one"
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else "an array is missing"  # numpy: 'X is not a file in the archive'
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class LayerStatistics:
    """Statistics of one hooked layer's channels (C channels, K classes)."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    shapiro: np.ndarray  # (C,)
    class_pvalues: np.ndarray  # (C, K), NaN where a class had too few samples
    count: int = 0


@dataclass
class SIPStatistics:
    """Calibration statistics for every hooked layer of one model."""

    model_name: str
    layers: tuple[str, ...]
    fingerprint: str
    per_layer: dict[str, LayerStatistics]
    num_classes: int
    _torch_cache: dict = field(default_factory=dict, repr=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` atomically."""
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "model_name": np.array(self.model_name),
            "layers": np.array(self.layers, dtype=str),
            "fingerprint": np.array(self.fingerprint),
            "num_classes": np.array(self.num_classes),
        }
        for i, name in enumerate(self.layers):
            s = self.per_layer[name]
            arrays.update({f"{i}/mean": s.mean, f"{i}/std": s.std, f"{i}/shapiro": s.shapiro,
                           f"{i}/class_pvalues": s.class_pvalues, f"{i}/count": np.array(s.count)})
        with atomic_write(path, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SIPStatistics":
        path = Path(path)
        if path.is_dir():
            raise SipgradError(f"{path}: is a folder; give the .npz statistics file that calibrate wrote")
        if not path.is_file():
            raise SipgradError(f"{path}: statistics file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                layers = tuple(str(x) for x in data["layers"])
                per_layer = {
                    name: LayerStatistics(data[f"{i}/mean"], data[f"{i}/std"], data[f"{i}/shapiro"],
                                          data[f"{i}/class_pvalues"], int(data[f"{i}/count"]))
                    for i, name in enumerate(layers)
                }
                classes = int(data["num_classes"])
                model_name, fingerprint = str(data["model_name"]), str(data["fingerprint"])
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # a truncated .npz: BadZipFile
            raise SipgradError(f"{path}: not a sipgrad statistics file ({npz_problem(error)})") from None
        for i, (name, stats) in enumerate(per_layer.items()):  # a hand-edited or damaged file: name the array
            shapes = {field_name: getattr(stats, field_name).shape for field_name in ("mean", "std", "shapiro")}
            if len(set(shapes.values())) != 1 or len(shapes["mean"]) != 1:
                listed = ", ".join(f"{i}/{field_name} {shape}" for field_name, shape in shapes.items())
                raise SipgradError(f"{path}: the per-channel arrays of layer {name} must be one and the same "
                                   f"length, got {listed}")
            if stats.class_pvalues.shape != (*shapes["mean"], classes):
                raise SipgradError(f"{path}: array {i}/class_pvalues (layer {name}) has shape "
                                   f"{stats.class_pvalues.shape}, expected {(*shapes['mean'], classes)}")
        return cls(model_name, layers, fingerprint, per_layer, classes)

    def check_model(self, model: nn.Module, model_name: str | None = None) -> None:
        """Refuse a model whose hooked layers differ from the calibrated ones."""
        modules = dict(model.named_modules())
        missing = [name for name in self.layers if name not in modules]
        if missing or layer_fingerprint(model, self.layers) != self.fingerprint:
            if model_name == self.model_name and not missing:  # same architecture, other weights
                raise SipgradError(f"statistics were computed for {self.model_name} with other weights (the "
                                   f"fingerprint of layers {', '.join(self.layers[:3])}... differs); "
                                   f"run calibrate for it")
            which = f" {model_name}" if model_name else ""
            raise SipgradError(f"statistics were computed for {self.model_name} "
                               f"(layers {', '.join(self.layers[:3])}...), not for this{which} model; "
                               f"run calibrate for it")

    def tensors(self, layer: str, device: torch.device) -> dict[str, torch.Tensor]:
        """The layer's statistics as float32 tensors on ``device`` (cached)."""
        key = (layer, str(device))
        if key not in self._torch_cache:
            s = self.per_layer[layer]
            as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
            self._torch_cache[key] = {
                "mean": as_t(s.mean), "std": as_t(s.std), "shapiro": as_t(np.nan_to_num(s.shapiro, nan=1.0)),
                "class_pvalues": as_t(np.nan_to_num(s.class_pvalues, nan=1.0)),
            }
        return self._torch_cache[key]
