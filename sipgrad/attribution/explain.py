"""``explain``: the front end from images (paths, arrays, PIL, tensors) to saliency maps.

It loads and prepares the images, resolves the user's target spec, and hands batches of
tensors to the ``AttributionEngine`` (``sipgrad.attribution.engine``), which does the
attribution, with or without SIP; then maps the results back onto the original images.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from sipgrad.attribution.engine import AttributionEngine, BatchAttribution
from sipgrad.attribution.explanation import Explanation
from sipgrad.attribution.inputs import PreparedBatch, prepare_batch
from sipgrad.attribution.methods import MethodOptions
from sipgrad.errors import SipgradError
from sipgrad.hooks.sip import SIPConfig
from sipgrad.models.inference import evaluation_mode  # noqa: F401  (re-exported: users import it from here)
from sipgrad.models.classes import ClassNames
from sipgrad.models.preprocessing import Preprocessing
from sipgrad.models.registry import Classifier
from sipgrad.memory import release_freed_memory

TargetSpec = int | str | Sequence[int | str | None] | torch.Tensor | np.ndarray | None


def resolve_targets(target: TargetSpec, classes: ClassNames, batch: int) -> torch.Tensor:
    """Per-image target indices (B,); -1 means "the predicted class".

    ``target`` may be ``None`` (predicted top-1 for every image), one class (index,
    name or wnid) for all images, or a sequence, tensor or numpy array with one entry per
    image (``None`` or -1 in it: that image's predicted class).

    Every form is checked the same way, because a tensor's values are later used as
    indices where a negative one would silently pick a class from the end (or, as before
    this check, a value below -1 fell through to "predicted"): an index below -1 or past the
    last class, a fractional number or a bool is a one-line ``SipgradError`` naming the
    value and its image (row).
    """
    if target is None:
        return torch.full((batch,), -1, dtype=torch.long)
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target) if target.dtype.kind in "biuf" else target.tolist()
    if isinstance(target, np.generic):
        target = target.item()
    if isinstance(target, torch.Tensor):
        entries = target.reshape(-1).tolist()
        if len(entries) == 1:
            entries = entries * batch
        rows = [f"image {row}" for row in range(len(entries))]
    elif isinstance(target, (int, float, str)):
        entries, rows = [target] * batch, ["every image"] * batch
    else:
        entries = [t.item() if isinstance(t, np.generic) else t for t in target]
        rows = [f"image {row}" for row in range(len(entries))]
    if len(entries) != batch:
        raise SipgradError(f"{len(entries)} targets given for {batch} images")
    return torch.tensor([_target_index(t, row, classes) for t, row in zip(entries, rows)], dtype=torch.long)


def _target_index(entry: object, row: str, classes: ClassNames) -> int:
    """One target as a class index or -1 (predicted), or a ``SipgradError`` naming ``row``."""
    if entry is None:
        return -1
    if isinstance(entry, str) and entry.strip().startswith("-") and entry.strip()[1:].isdigit():
        entry = int(entry)  # "-1" (a command line's "predicted"), checked as an index below
    if isinstance(entry, str):
        try:
            return classes.index(entry)
        except SipgradError as error:
            raise SipgradError(f"target for {row}: {error}") from None
    if isinstance(entry, float) and entry.is_integer():
        entry = int(entry)
    if isinstance(entry, bool) or not isinstance(entry, int):
        raise SipgradError(f"target {entry!r} for {row} is not a class index, class name or None")
    if not -1 <= entry < len(classes):
        raise SipgradError(f"target {entry} for {row} is out of range: a class index 0..{len(classes) - 1}, "
                           f"or -1 for the predicted class")
    return entry


def _options(options: MethodOptions | None, overrides: dict[str, Any]) -> MethodOptions:
    valid = {f.name for f in fields(MethodOptions)}
    unknown = set(overrides) - valid
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}")
    return replace(options or MethodOptions(), **overrides)


def explain(model: Classifier | nn.Module, images: Any, target: TargetSpec = None, method: str = "grad",
            sip: str | SIPConfig | None = None, *, crop: bool = False, batch_size: int = 16,
            reduce: str = "mean", preprocessing: Preprocessing | None = None, options: MethodOptions | None = None,
            progress: Callable[[int], None] | None = None, indices: Sequence[int] | torch.Tensor | None = None,
            **method_options: Any) -> Explanation:
    """Explain why ``model`` predicts what it does on ``images``.

    Args:
        model: a ``Classifier`` from ``load_model``/``Classifier.wrap``, or any ``nn.Module``
            returning logits (then pass ``preprocessing``).
        images: a path, PIL image or numpy array, a sequence of those, or a tensor taken as
            the model input as it is (B x 3 x H x W).
        target: ``None`` (each image's top-1), a class index/name/wnid, or one per image
            (a list, tensor or numpy array; ``None`` or -1 in it is that image's top-1).
        method: ``grad``, ``inputgrad``, ``smoothgrad``, ``ig`` or ``gradcam``.
        sip: ``None``/``"none"``, a spec string (``"topq:0.25"``, ``"cls"``) or a ``SIPConfig``.
        crop: use the model's resize + centre crop instead of explaining the whole image.
        batch_size: images per forward/backward pass.
        reduce: ``mean`` or ``max`` over colour channels of |attribution|.
        indices: each image's position in the caller's whole run (default 0..N-1). Random methods
            (SmoothGrad, IG's noise baseline) draw an image's noise from its position, so
            a run explained in several calls, one per part, gives every image the map one call would
            when each part passes its images' positions.
        method_options: ``MethodOptions`` fields, e.g. ``ig_steps=32``, ``seed=1``.

    Returns:
        An ``Explanation`` with maps at each original image's size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SipgradError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not isinstance(model, Classifier):
        classifier = Classifier.wrap(model, preprocessing)
    elif preprocessing is not None:  # a caller's preprocessing overrides the model's own
        classifier = replace(model, preprocessing=preprocessing)
    else:
        classifier = model
    engine = AttributionEngine(classifier, method, sip, _options(options, method_options))
    prepared = prepare_batch(images, classifier.preprocessing, crop)
    targets = resolve_targets(target, classifier.classes, prepared.inputs.shape[0])
    positions = _run_positions(indices, prepared.inputs.shape[0])

    parts: list[BatchAttribution] = []
    seconds: list[float] = []
    for start in range(0, prepared.inputs.shape[0], batch_size):
        rows = torch.arange(start, min(start + batch_size, prepared.inputs.shape[0]))
        began = time.perf_counter()
        parts.append(engine(prepared.inputs[rows], targets[rows], indices=positions[rows]))
        seconds += [(time.perf_counter() - began) / len(rows)] * len(rows)
        if progress is not None:
            progress(len(rows))
    release_freed_memory()  # the passes' temporaries, before the full-size maps are made
    return _assemble(classifier, prepared, parts, engine, reduce, seconds)


def _run_positions(indices: Sequence[int] | torch.Tensor | None, count: int) -> torch.Tensor:
    """The images' positions in the caller's run: ``indices`` checked (one int >= 0 per image), or 0..count-1."""
    if indices is None:
        return torch.arange(count)
    values = indices.reshape(-1).tolist() if isinstance(indices, torch.Tensor) else list(indices)
    if len(values) != count:
        raise SipgradError(f"{len(values)} indices given for {count} images")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise SipgradError(f"indices must be whole numbers >= 0 (each image's position in the run), got {value!r}")
    return torch.tensor([int(v) for v in values], dtype=torch.long)


def _assemble(classifier: Classifier, prepared: PreparedBatch, parts: list[BatchAttribution],
              engine: AttributionEngine, reduce: str, seconds: list[float]) -> Explanation:
    attribution = torch.cat([p.attribution for p in parts]).cpu()
    input_maps = torch.cat([p.maps(reduce).cpu() for p in parts])
    originals = [g.map_to_original(m).numpy().astype(np.float32, copy=False)
                 for g, m in zip(prepared.geometries, input_maps)]
    return Explanation(
        model_name=classifier.name, method=engine.method.name, attribution=attribution, input_saliency=input_maps,
        saliency=originals, probabilities=torch.cat([p.logits for p in parts]).float().softmax(dim=1).cpu(),
        targets=torch.cat([p.targets for p in parts]).cpu(), classes=classifier.classes,
        images=prepared.images, names=prepared.names, geometries=prepared.geometries, layer=engine.layer_name,
        sip=engine.sip_label, seconds=seconds)
