"""Attribution methods on top of captum, and the one registry that names them.

Each method receives a *forward function* ``f(x, targets) -> (B, 1)`` returning the
logit being explained, with the per-row targets passed as captum's
``additional_forward_args``: captum expands and slices them exactly as it expands and
slices inputs, so every forward call knows the target of each of its rows. SIP hooks
do not even need that: they read each row's class from the gradient at the logits.

Random methods draw their noise per image from (seed, image index) on the CPU, so a
map depends neither on the batch it was computed in nor on the device.
``METHODS`` maps each name to a ``Method`` entry; adding a method is one entry.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from sipgrad.errors import SipgradError

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BASELINES = ("black", "zero", "noise")


@dataclass(frozen=True)
class MethodOptions:
    """Settings of the attribution methods, validated when constructed.

    Attributes:
        smoothgrad_samples: noisy copies averaged by SmoothGrad.
        smoothgrad_noise: noise std as a fraction of the input's value range.
        ig_steps: integration steps of Integrated Gradients.
        ig_baseline: ``black`` (a black image), ``zero`` (an all-zero input) or ``noise`` (uniform noise, seeded).
        internal_batch_size: most rows per forward pass inside SmoothGrad and IG (memory bound).
        seed: seeds SmoothGrad's noise and the noise baseline, per image, so results are reproducible.
        gradcam_layer: module name for Grad-CAM; ``None`` uses the model's default.
    """

    smoothgrad_samples: int = 25
    smoothgrad_noise: float = 0.15
    ig_steps: int = 50
    ig_baseline: str = "black"
    internal_batch_size: int = 16
    seed: int = 0
    gradcam_layer: str | None = None

    def __post_init__(self) -> None:
        if self.ig_baseline not in BASELINES:
            raise SipgradError(f"unknown ig_baseline {self.ig_baseline!r}; choose from {', '.join(BASELINES)}")
        for name in ("smoothgrad_samples", "ig_steps", "internal_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SipgradError(f"{name} must be a whole number >= 1, got {value!r}")
        if not (isinstance(self.smoothgrad_noise, (int, float)) and math.isfinite(self.smoothgrad_noise)
                and self.smoothgrad_noise >= 0):
            raise SipgradError(f"smoothgrad_noise must be a finite number >= 0, got {self.smoothgrad_noise!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SipgradError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.gradcam_layer is not None and not (isinstance(self.gradcam_layer, str) and self.gradcam_layer.strip()):
            # "" used to mean the model's default layer without a word; None says that
            raise SipgradError(f"gradcam_layer must name a module, got {self.gradcam_layer!r}; leave it unset for "
                               f"the model's default layer")

    def validate(self) -> None:
        """Kept for compatibility: constructed options are always valid."""


@dataclass(frozen=True)
class AttributionContext:
    """What a method needs besides inputs and targets.

    ``indices`` are the images' positions in the whole run (seeds per image), ``pixel_range``
    the width of the valid input range (SmoothGrad's noise scale), ``black`` the model
    input of a black image (IG's baseline), ``layer`` Grad-CAM's module.
    """

    options: MethodOptions
    indices: torch.Tensor
    pixel_range: float = 1.0
    black: torch.Tensor | None = None
    layer: nn.Module | None = None


def image_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for one image, from (seed, index) mixed by numpy's SeedSequence."""
    state = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(state)


def _per_image(draw: Callable[[torch.Generator], torch.Tensor], context: AttributionContext,
               device: torch.device) -> torch.Tensor:
    """Stack ``draw(generator)`` over the batch's images (a loop over B RNG calls, not over compute)."""
    parts = [draw(image_generator(context.options.seed, int(i))) for i in context.indices.tolist()]
    return torch.stack(parts).to(device)


def _grad(forward, inputs, targets, context):
    return Saliency(forward).attribute(inputs, abs=True, additional_forward_args=(targets,))


def _inputgrad(forward, inputs, targets, context):
    return InputXGradient(forward).attribute(inputs, additional_forward_args=(targets,))


def _smoothgrad(forward, inputs, targets, context):
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over Gaussian-noised copies of each image.

    Noise is drawn per image from (seed, image index); the B x S noisy copies go through
    captum's Saliency in chunks of ``internal_batch_size`` rows, image-major, so each
    chunk's targets are exactly its rows' images' targets.
    """
    options = context.options
    samples = options.smoothgrad_samples
    std = options.smoothgrad_noise * context.pixel_range
    noise = _per_image(lambda g: torch.randn((samples, *inputs.shape[1:]), generator=g), context, inputs.device)
    noisy = (inputs.detach()[:, None] + std * noise.to(inputs.dtype)).flatten(0, 1)  # (B*S) x C x H x W
    rows = targets.repeat_interleave(samples)
    saliency = Saliency(forward)
    grads = [saliency.attribute(noisy[i:i + options.internal_batch_size].requires_grad_(True), abs=False,
                                additional_forward_args=(rows[i:i + options.internal_batch_size],))
             for i in range(0, noisy.shape[0], options.internal_batch_size)]
    return torch.cat(grads).reshape(inputs.shape[0], samples, *inputs.shape[1:]).mean(dim=1)


def _ig(forward, inputs, targets, context):
    options = context.options
    lows = context.black.expand_as(inputs) if context.black is not None else torch.zeros_like(inputs)
    if options.ig_baseline == "zero":
        baseline = torch.zeros_like(inputs)
    elif options.ig_baseline == "black":
        baseline = lows
    else:
        uniform = _per_image(lambda g: torch.rand(inputs.shape[1:], generator=g), context, inputs.device)
        baseline = lows + context.pixel_range * uniform.to(inputs.dtype)
    return IntegratedGradients(forward).attribute(
        inputs, baselines=baseline.detach(), n_steps=options.ig_steps,
        # captum needs room for at least one row per example in each internal batch.
        internal_batch_size=max(options.internal_batch_size, inputs.shape[0]), additional_forward_args=(targets,))


def _gradcam(forward, inputs, targets, context):
    if context.layer is None:
        raise SipgradError("Grad-CAM needs a conv layer; the model has none")
    cam = LayerGradCam(forward, context.layer).attribute(inputs, additional_forward_args=(targets,),
                                                         relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")


@dataclass(frozen=True)
class Method:
    """One attribution method of the registry.

    Attributes:
        name: the name users pass (``method="ig"``).
        title: a readable name for tables and figures.
        captum: the captum class that computes its gradients.
        run: ``run(forward, inputs, targets, context) -> attribution``.
        single_pass: one forward pass on the clean input, which also gives the predictions.
        draws_noise: ``draws_noise(options)``: whether the method draws random noise under these options
            (reproducible from ``MethodOptions.seed``), so that a record of its maps depends on the seeding.
        sip_scope: where SIP acts under this method.
        channels: 3 for input-space attributions, 1 for class activation maps.
    """

    name: str
    title: str
    captum: type
    run: Callable[[ForwardFn, torch.Tensor, torch.Tensor, AttributionContext], torch.Tensor]
    single_pass: bool
    draws_noise: Callable[[MethodOptions], bool] = lambda options: False
    sip_scope: str = "every hooked layer"
    channels: int = 3


class MethodRegistry(dict):
    """Name -> ``Method``. Earlier versions exposed ``METHODS`` as a tuple of names: iteration,
    ``in`` and ``len`` work as before, and positional indexing still works with a warning."""

    def __getitem__(self, key: str | int) -> Method | str:
        if isinstance(key, int):
            warnings.warn("METHODS is now a registry keyed by name; METHODS[i] is deprecated, use list(METHODS)[i]",
                          DeprecationWarning, stacklevel=2)
            return list(self)[key]
        return super().__getitem__(key)


METHODS: MethodRegistry = MethodRegistry({m.name: m for m in (
    Method("grad", "Gradient", Saliency, _grad, single_pass=True),
    Method("inputgrad", "Input x Gradient", InputXGradient, _inputgrad, single_pass=True),
    Method("smoothgrad", "SmoothGrad", Saliency, _smoothgrad, single_pass=False,
           draws_noise=lambda options: True),
    Method("ig", "Integrated Gradients", IntegratedGradients, _ig, single_pass=False,
           draws_noise=lambda options: options.ig_baseline == "noise"),
    Method("gradcam", "Grad-CAM", LayerGradCam, _gradcam, single_pass=True,
           sip_scope="the Grad-CAM layer and hooked layers after it", channels=1),
)})
# Kept for compatibility: the names of the single-pass methods.
SINGLE_PASS = frozenset(name for name, m in METHODS.items() if m.single_pass)


def get_method(name: str) -> Method:
    """The registry entry of ``name``, or a one-line error listing the choices."""
    if name not in METHODS:
        raise SipgradError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def attribute(method: str, forward: ForwardFn, inputs: torch.Tensor, targets: torch.Tensor, *,
              options: MethodOptions, layer: nn.Module | None = None, pixel_range: float = 1.0,
              black: torch.Tensor | None = None, indices: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution of ``forward``'s target logit to ``inputs`` (B x 3 x H x W).

    Returns a tensor shaped like ``inputs``; for ``gradcam`` it is B x 1 x H x W (the
    class activation map, ReLU applied, bilinearly upsampled to the input size).
    ``indices`` are the images' positions in the run (default 0..B-1), which seed their noise.
    """
    entry = get_method(method)
    indices = torch.arange(inputs.shape[0]) if indices is None else indices.reshape(-1).cpu()
    if indices.numel() != inputs.shape[0]:
        raise SipgradError(f"{indices.numel()} image indices given for a batch of {inputs.shape[0]}")
    context = AttributionContext(options, indices, pixel_range, black, layer)
    return entry.run(forward, inputs.detach().requires_grad_(True), targets, context)


def saliency_map(attribution: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """2-D maps (B x H x W) from attributions: mean (or max) over channels of the absolute value."""
    if reduce not in ("mean", "max"):
        raise SipgradError(f"unknown channel reduction {reduce!r}; choose mean or max")
    magnitude = attribution.detach().abs()
    return magnitude.mean(dim=1) if reduce == "mean" else magnitude.amax(dim=1)
