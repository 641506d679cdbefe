"""Forward mode on inputs: JVPs and forward-gradient estimates of input gradients.

Reverse mode (backpropagation) gives a whole gradient for one backward pass but must keep
the forward pass's activations. Forward mode (``torch.func.jvp``) pushes a tangent v
through the forward pass alongside the values and returns the directional derivative
grad f . v, with no tape: memory stays that of inference.

The *forward gradient* (Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without
Backpropagation") turns that into a gradient estimate: with v ~ N(0, I),

    g = (grad f . v) v,   E[g] = E[v v^T] grad f = grad f,

an unbiased estimate from forward passes only; averaging K directions divides its
variance by K, and a basis of the D-dimensional space, its D orthonormal directions
scaled by sqrt(D) (so that the average of v v^T is the identity), gives the gradient exactly. This module uses it for input-space saliency estimates (``forward_gradient``);
``sipgrad.engines.forward.estimators`` does the same over a model's parameters.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import jvp, vmap

from sipgrad.errors import SipgradError


@contextlib.contextmanager
def quiet_forward_ad() -> Iterator[None]:
    """Silence the FutureWarning torch's forward-AD set-up raises about its own internal use of
    ``torch.jit.script`` on the first JVP (nothing the caller can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        yield


def model_jvp(model: nn.Module, inputs: torch.Tensor, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output and its directional derivative along ``tangents`` (same shape as ``inputs``).

    One forward pass in forward mode; no autograd graph is kept. The model's parameters are
    constants here (use ``forward_gradient_step`` for parameter directions).
    """
    if tangents.shape != inputs.shape:
        raise SipgradError(f"tangents must have the inputs' shape {tuple(inputs.shape)}, got {tuple(tangents.shape)}")
    with torch.no_grad(), quiet_forward_ad():  # no reverse-mode graph; dual numbers are unaffected
        return jvp(model, (inputs,), (tangents,))


def forward_gradient(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, directions: int = 16, *,
                     generator: torch.Generator | None = None, tangents: torch.Tensor | None = None,
                     chunk_size: int | None = None) -> torch.Tensor:
    """Forward-gradient estimate of the gradient of each row's scalar ``fn(inputs)[b]`` w.r.t. ``inputs[b]``.

    ``fn`` maps a B x ... batch to B scalars (e.g. each image's target logit); rows must not
    interact (true for models in eval mode). Each of the ``directions`` draws an independent
    Gaussian direction per row; the estimate is their average of (grad . v) v. All directions
    go through one vmapped JVP (``chunk_size`` directions at a time bounds the memory).
    ``tangents`` (K x B x ...) replaces the random directions, e.g. an orthonormal basis of
    all D = K dimensions scaled by sqrt(D), which makes the result exact (unscaled, the average
    (grad . v) v over K orthonormal v is grad / K). Reproducible with ``generator``: the same generator state and
    batch give the same estimate. The directions are drawn for the whole batch at once, so a
    row's estimate also depends on the rows drawn before it (its batch and position); for an
    estimate of each row that is the same in any batch, pass ``tangents`` drawn per row.
    """
    if tangents is None:
        if directions < 1:
            raise SipgradError("forward_gradient needs at least one direction")
        tangents = torch.randn((directions, *inputs.shape), generator=generator, device=inputs.device,
                               dtype=inputs.dtype)
    elif tangents.shape[1:] != inputs.shape:
        raise SipgradError(f"tangents must be K x {tuple(inputs.shape)}, got {tuple(tangents.shape)}")
    with torch.no_grad(), quiet_forward_ad():
        derivatives = vmap(lambda tangent: jvp(fn, (inputs,), (tangent,))[1], chunk_size=chunk_size)(tangents)
    if derivatives.shape != (tangents.shape[0], inputs.shape[0]):
        raise SipgradError(f"fn must return one scalar per row (shape {(inputs.shape[0],)}), "
                           f"got {tuple(derivatives.shape[1:])}")
    per_row = derivatives.reshape(*derivatives.shape, *(1,) * (inputs.dim() - 1))
    return (per_row * tangents).mean(dim=0)


def target_logit(model: nn.Module, targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> model(x)[b, targets[b]]``: the per-row scalar that saliency explains."""
    index = targets.reshape(-1, 1)
    return lambda x: model(x).gather(1, index.to(x.device))[:, 0]
