"""Binary-weight layers trainable by forward gradients: sign with a straight-through estimator, soft weights.

A binary network computes with weights sign(w) in {-1, +1} while training real-valued
*latent* weights w (BinaryConnect, Courbariaux et al. 2015). sign has zero derivative
almost everywhere, so training uses the straight-through estimator (STE): the derivative
of the surrogate hardtanh(w), taken as 1 where |w| <= 1, the boundary included (torch's own
hardtanh gives 0 at +-1; BinaryConnect's rule keeps clipped weights, which sit at +-1, trainable),
and 0 elsewhere. Forward-gradient
training needs that rule in forward mode too, so ``SignSTE`` defines ``jvp`` beside
``backward`` (and a vmap rule, so K tangents batch).

*Soft weights* replace sign(w) by the smooth tanh(beta w), annealed towards sign by raising
beta during training; the network is evaluated with sign. Latent weights can be stored at
b bits (``stochastic_round``): unbiased stochastic rounding onto 2^b levels in [-1, 1],
so updates smaller than one level still move the weights on average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sipgrad.errors import SipgradError


class SignSTE(torch.autograd.Function):
    """sign(w) (with sign(0) = +1); backward and forward mode pass derivatives where |w| <= 1."""

    generate_vmap_rule = True

    @staticmethod
    def forward(latent: torch.Tensor) -> torch.Tensor:
        return torch.where(latent >= 0, 1.0, -1.0).to(latent.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        latent, = inputs
        passes = latent.abs() <= 1
        ctx.save_for_backward(passes)
        ctx.save_for_forward(passes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        passes, = ctx.saved_tensors
        return grad_output * passes

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        passes, = ctx.saved_tensors
        return tangent * passes


def binarize(latent: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """sign(latent) with the STE, or the soft weights tanh(beta * latent) when ``beta`` is given."""
    if beta is None:
        return SignSTE.apply(latent)
    return torch.tanh(beta * latent)


def stochastic_round(latent: torch.Tensor, bits: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``latent`` clipped to [-1, 1] and rounded onto 2^bits evenly spaced levels, up or down at random.

    Rounds up with probability equal to the distance from the lower level (in level units),
    so E[result] = clip(latent): the rounding adds noise but no bias.
    """
    if not 1 <= bits <= 16:
        raise SipgradError(f"latent bits must be in 1..16, got {bits}")
    step = 2.0 / (2 ** bits - 1)
    position = (latent.clamp(-1.0, 1.0) + 1.0) / step
    noise = torch.rand(latent.shape, generator=generator, device=latent.device, dtype=latent.dtype)
    return torch.floor(position + noise).clamp(0, 2 ** bits - 1) * step - 1.0


class BinaryLayer:
    """Mixin: the weight a binary layer computes with, and its soft-weight sharpness ``beta`` (None: sign)."""

    beta: float | None = None

    def effective_weight(self) -> torch.Tensor:
        fan_in = self.weight[0].numel()
        # the 1 / sqrt(fan_in) keeps pre-activations of +-1 weights at unit scale
        return binarize(self.weight, self.beta) * (self.scale.reshape(-1, *(1,) * (self.weight.dim() - 1))
                                                   / math.sqrt(fan_in))

    def _init_binary(self) -> None:
        self.scale = nn.Parameter(torch.ones(self.weight.shape[0]))
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)


class BinaryLinear(nn.Linear, BinaryLayer):
    """``nn.Linear`` whose weights are binarised in the forward pass; latent weights stay real."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self._init_binary()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class BinaryConv2d(nn.Conv2d, BinaryLayer):
    """``nn.Conv2d`` whose weights are binarised in the forward pass; latent weights stay real."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_binary()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


def binary_layers(model: nn.Module) -> list[BinaryLayer]:
    return [m for m in model.modules() if isinstance(m, BinaryLayer)]


def set_beta(model: nn.Module, beta: float | None) -> None:
    """Soft weights tanh(beta w) in every binary layer, or hard sign when ``beta`` is None."""
    for layer in binary_layers(model):
        layer.beta = beta


def clip_and_store_latents(model: nn.Module, bits: int | None = None, generator: torch.Generator | None = None) -> None:
    """After an update: latent weights back into [-1, 1] (BinaryConnect) and, with ``bits``, onto b-bit levels."""
    with torch.no_grad():
        for layer in binary_layers(model):
            if bits is None:
                layer.weight.clamp_(-1.0, 1.0)
            else:
                layer.weight.copy_(stochastic_round(layer.weight, bits, generator))
