"""Attribution methods, on top of captum.

Each method receives a *forward function* ``f(x, targets) -> (B, 1)`` that returns the
logit being explained, with the per-sample targets passed as captum's
``additional_forward_args``. captum expands and slices additional arguments exactly
as it expands and slices inputs (noise samples, integration steps, internal
batches), so every forward call knows the target of each of its rows. That is what
lets per-image targets work everywhere, and lets SIP hooks see the right class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from sipgrad.errors import SipgradError

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("grad", "inputgrad", "smoothgrad", "ig", "gradcam")
# Methods whose single forward pass can also give the predictions (no separate clean pass).
SINGLE_PASS = frozenset({"grad", "inputgrad", "gradcam"})
BASELINES = ("black", "zero", "noise")


@dataclass(frozen=True)
class MethodOptions:
    """Settings of the attribution methods.

    Attributes:
        smoothgrad_samples: noisy copies averaged by SmoothGrad.
        smoothgrad_noise: noise std as a fraction of the input's value range.
        ig_steps: integration steps of Integrated Gradients.
        ig_baseline: ``black`` (a black image), ``zero`` (an all-zero input) or ``noise`` (uniform noise, seeded).
        internal_batch_size: most rows per forward pass inside SmoothGrad and IG (memory bound).
        seed: seeds SmoothGrad's noise and the noise baseline, so results are reproducible.
        gradcam_layer: module name for Grad-CAM; ``None`` uses the model's default.
    """

    smoothgrad_samples: int = 25
    smoothgrad_noise: float = 0.15
    ig_steps: int = 50
    ig_baseline: str = "black"
    internal_batch_size: int = 16
    seed: int = 0
    gradcam_layer: str | None = None

    def validate(self) -> None:
        if self.ig_baseline not in BASELINES:
            raise SipgradError(f"unknown IG baseline {self.ig_baseline!r}; choose from {', '.join(BASELINES)}")
        for field_name in ("smoothgrad_samples", "ig_steps", "internal_batch_size"):
            if getattr(self, field_name) < 1:
                raise SipgradError(f"{field_name} must be at least 1")


def attribute(method: str, forward: ForwardFn, inputs: torch.Tensor, targets: torch.Tensor, *,
              options: MethodOptions, layer: nn.Module | None = None,
              pixel_range: float = 1.0, black: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution of ``forward``'s target logit to ``inputs`` (B x 3 x H x W).

    Returns a tensor shaped like ``inputs``; for ``gradcam`` it is B x 1 x H x W (the
    class activation map, ReLU applied, bilinearly upsampled to the input size).
    ``pixel_range`` is the width of the valid input range (for the SmoothGrad noise),
    ``black`` the model input of a black image (for the IG baseline).
    """
    inputs = inputs.detach().requires_grad_(True)
    extra = (targets,)
    if method == "grad":
        return Saliency(forward).attribute(inputs, abs=True, additional_forward_args=extra)
    if method == "inputgrad":
        return InputXGradient(forward).attribute(inputs, additional_forward_args=extra)
    if method == "smoothgrad":
        # captum draws the noise from the global RNG: fork it, so the seed makes results
        # reproducible without disturbing the caller's random state.
        with torch.random.fork_rng(devices=[inputs.device] if inputs.device.type == "cuda" else []):
            torch.manual_seed(options.seed)
            batch = max(1, options.internal_batch_size // inputs.shape[0])
            return NoiseTunnel(Saliency(forward)).attribute(
                inputs, nt_type="smoothgrad", nt_samples=options.smoothgrad_samples,
                nt_samples_batch_size=min(batch, options.smoothgrad_samples),
                stdevs=options.smoothgrad_noise * pixel_range, abs=False, additional_forward_args=extra)
    if method == "ig":
        if options.ig_baseline == "zero":
            baseline = torch.zeros_like(inputs)
        elif options.ig_baseline == "black":
            baseline = black.expand_as(inputs) if black is not None else torch.zeros_like(inputs)
        else:
            generator = torch.Generator(device=inputs.device).manual_seed(options.seed)
            lows = black.expand_as(inputs) if black is not None else torch.zeros_like(inputs)
            baseline = lows + pixel_range * torch.rand(inputs.shape, generator=generator, device=inputs.device)
        return IntegratedGradients(forward).attribute(
            inputs, baselines=baseline.detach(), n_steps=options.ig_steps,
            # captum needs room for at least one row per example in each internal batch.
            internal_batch_size=max(options.internal_batch_size, inputs.shape[0]), additional_forward_args=extra)
    if method == "gradcam":
        if layer is None:
            raise SipgradError("Grad-CAM needs a conv layer; the model has none")
        cam = LayerGradCam(forward, layer).attribute(inputs, additional_forward_args=extra, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    raise SipgradError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def saliency_map(attribution: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """2-D maps (B x H x W) from attributions: mean (or max) over channels of the absolute value."""
    if reduce not in ("mean", "max"):
        raise SipgradError(f"unknown channel reduction {reduce!r}; choose mean or max")
    magnitude = attribution.detach().abs()
    return magnitude.mean(dim=1) if reduce == "mean" else magnitude.amax(dim=1)
