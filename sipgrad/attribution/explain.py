"""``explain``: one call from images to saliency maps, with or without SIP."""

from __future__ import annotations

import contextlib
import time
from dataclasses import fields, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sipgrad.attribution.explanation import Explanation
from sipgrad.attribution.inputs import PreparedBatch, prepare_batch
from sipgrad.attribution.methods import METHODS, SINGLE_PASS, MethodOptions, attribute, saliency_map
from sipgrad.errors import SipgradError
from sipgrad.hooks.sip import SIP, SIPConfig
from sipgrad.models.classes import ClassNames
from sipgrad.models.preprocessing import Preprocessing
from sipgrad.models.registry import Classifier

TargetSpec = int | str | Sequence[int | str] | torch.Tensor | None


def resolve_targets(target: TargetSpec, classes: ClassNames, batch: int) -> torch.Tensor:
    """Per-image target indices (B,); -1 means "the predicted class".

    ``target`` may be ``None`` (predicted top-1 for every image), one class (index,
    name or wnid) for all images, or a sequence/tensor with one entry per image.
    """
    if target is None:
        return torch.full((batch,), -1, dtype=torch.long)
    if isinstance(target, torch.Tensor):
        values = target.reshape(-1).long()
        if values.numel() == 1:
            values = values.repeat(batch)
    elif isinstance(target, (int, str)):
        values = torch.full((batch,), classes.index(target), dtype=torch.long)
    else:
        values = torch.tensor([-1 if t is None else classes.index(t) for t in target], dtype=torch.long)
    if values.numel() != batch:
        raise SipgradError(f"{values.numel()} targets given for {batch} images")
    if (values >= len(classes)).any():
        raise SipgradError(f"a target index is out of range (0..{len(classes) - 1})")
    return values


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block and restore every submodule's flag after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _options(options: MethodOptions | None, overrides: dict[str, Any]) -> MethodOptions:
    valid = {f.name for f in fields(MethodOptions)}
    unknown = set(overrides) - valid
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}")
    base = options or MethodOptions()
    merged = MethodOptions(**{**{f.name: getattr(base, f.name) for f in fields(MethodOptions)}, **overrides})
    merged.validate()
    return merged


def explain(model: Classifier | nn.Module, images: Any, target: TargetSpec = None, method: str = "grad",
            sip: str | SIPConfig | None = None, *, crop: bool = False, batch_size: int = 16,
            reduce: str = "mean", preprocessing: Preprocessing | None = None, options: MethodOptions | None = None,
            progress: Callable[[int], None] | None = None, **method_options: Any) -> Explanation:
    """Explain why ``model`` predicts what it does on ``images``.

    Args:
        model: a ``Classifier`` from ``load_model``/``Classifier.wrap``, or any ``nn.Module``
            returning logits (then pass ``preprocessing``).
        images: a path, PIL image or numpy array, a sequence of those, or a tensor taken as
            the model input as it is (B x 3 x H x W).
        target: ``None`` (each image's top-1), a class index/name/wnid, or one per image.
        method: ``grad``, ``inputgrad``, ``smoothgrad``, ``ig`` or ``gradcam``.
        sip: ``None``/``"none"``, a spec string (``"topq:0.25"``, ``"cls"``) or a ``SIPConfig``.
        crop: use the model's resize + centre crop instead of explaining the whole image.
        batch_size: images per forward/backward pass.
        reduce: ``mean`` or ``max`` over colour channels of |attribution|.
        method_options: ``MethodOptions`` fields, e.g. ``ig_steps=32``, ``seed=1``.

    Returns:
        An ``Explanation`` with maps at each original image's size.
    """
    if method not in METHODS:
        raise SipgradError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if batch_size < 1:
        raise SipgradError("batch size must be at least 1")
    if not isinstance(model, Classifier):
        classifier = Classifier.wrap(model, preprocessing)
    elif preprocessing is not None:  # a caller's preprocessing overrides the model's own
        classifier = replace(model, preprocessing=preprocessing)
    else:
        classifier = model
    opts = _options(options, method_options)
    sip_config = SIPConfig.parse(sip)
    prepared = prepare_batch(images, classifier.preprocessing, crop)
    targets = resolve_targets(target, classifier.classes, prepared.inputs.shape[0])

    parts: list[dict[str, Any]] = []
    layer_name = (opts.gradcam_layer or classifier.gradcam_layer) if method == "gradcam" else None
    with evaluation_mode(classifier.module):
        sip_context = SIP(classifier, sip_config) if sip_config is not None else contextlib.nullcontext()
        with sip_context as hooked:
            for start in range(0, prepared.inputs.shape[0], batch_size):
                chunk = slice(start, start + batch_size)
                began = time.perf_counter()
                part = _explain_batch(classifier, prepared.inputs[chunk], targets[chunk], method, opts,
                                      layer_name, hooked)
                part["seconds"] = (time.perf_counter() - began) / part["targets"].shape[0]
                parts.append(part)
                if progress is not None:
                    progress(part["targets"].shape[0])
    return _assemble(classifier, prepared, parts, method, reduce, layer_name,
                     sip_config.label if sip_config else None)


def _explain_batch(classifier: Classifier, inputs: torch.Tensor, targets: torch.Tensor, method: str,
                   opts: MethodOptions, layer_name: str | None, hooked: SIP | None) -> dict[str, Any]:
    device = classifier.device
    inputs = inputs.to(device)
    targets = targets.to(device)
    module = classifier.module
    seen_logits: list[torch.Tensor] = []

    def forward(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        if hooked is not None:
            hooked.set_targets(chosen)
        logits = module(x)
        if not seen_logits:
            seen_logits.append(logits.detach())
        chosen = torch.where(chosen < 0, logits.detach().argmax(dim=1), chosen)
        return logits.gather(1, chosen[:, None])

    if method not in SINGLE_PASS:  # many noisy/interpolated passes: find the prediction on the clean input first
        with torch.no_grad():
            logits = module(inputs)
        seen_logits.append(logits)
        targets = torch.where(targets < 0, logits.argmax(dim=1), targets)
    layer = dict(module.named_modules()).get(layer_name) if layer_name else None
    if layer_name and layer is None:
        raise SipgradError(f"no layer named {layer_name!r} in {classifier.name}")
    pre = classifier.preprocessing
    black = pre.normalize(torch.zeros(3, 1, 1, device=device))
    pixel_range = float(np.mean([1.0 / s for s in pre.std]))
    attribution = attribute(method, forward, inputs, targets, options=opts, layer=layer,
                            pixel_range=pixel_range, black=black)
    logits = seen_logits[0]
    return {"attribution": attribution.detach(), "logits": logits,
            "targets": torch.where(targets < 0, logits.argmax(dim=1), targets)}


def _assemble(classifier: Classifier, prepared: PreparedBatch, parts: list[dict[str, Any]], method: str,
              reduce: str, layer_name: str | None, sip_label: str | None) -> Explanation:
    attribution = torch.cat([p["attribution"] for p in parts]).cpu()
    input_maps = saliency_map(attribution, reduce) if method != "gradcam" else attribution[:, 0].clamp_min(0)
    originals = [g.map_to_original(m).numpy().astype(np.float32) for g, m in zip(prepared.geometries, input_maps)]
    seconds = [p["seconds"] for p in parts for _ in range(p["targets"].shape[0])]
    return Explanation(
        model_name=classifier.name, method=method, attribution=attribution, input_saliency=input_maps,
        saliency=originals, probabilities=torch.cat([p["logits"] for p in parts]).float().softmax(dim=1).cpu(),
        targets=torch.cat([p["targets"] for p in parts]).cpu(), classes=classifier.classes,
        images=prepared.images, names=prepared.names, geometries=prepared.geometries, layer=layer_name,
        sip=sip_label, seconds=seconds)
