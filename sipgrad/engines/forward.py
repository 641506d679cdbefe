"""Forward-mode gradients: JVPs, forward-gradient estimates, forward-gradient training.

Reverse mode (backpropagation) gives a whole gradient for one backward pass but must keep
the forward pass's activations. Forward mode (``torch.func.jvp``) pushes a tangent v
through the forward pass alongside the values and returns the directional derivative
grad f . v, with no tape: memory stays that of inference.

The *forward gradient* (Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without
Backpropagation") turns that into a gradient estimate: with v ~ N(0, I),

    g = (grad f . v) v,   E[g] = E[v v^T] grad f = grad f,

an unbiased estimate from forward passes only; averaging K directions divides its
variance by K, and K orthonormal directions spanning the space give the gradient
exactly. sipgrad uses it for input-space saliency estimates (``forward_gradient``) and
for training without backprop (``forward_gradient_step``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, jvp

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
                     generator: torch.Generator | None = None, tangents: torch.Tensor | None = None) -> torch.Tensor:
    """Forward-gradient estimate of the gradient of each row's scalar ``fn(inputs)[b]`` w.r.t. ``inputs[b]``.

    ``fn`` maps a B x ... batch to B scalars (e.g. each image's target logit); rows must not
    interact (true for models in eval mode). Each of the ``directions`` forward passes draws an
    independent Gaussian direction per row; the estimate is their average of (grad . v) v.
    ``tangents`` (K x B x ...) replaces the random directions, e.g. an orthonormal basis,
    which makes the result exact. Reproducible with ``generator``.
    """
    if tangents is None:
        if directions < 1:
            raise SipgradError("forward_gradient needs at least one direction")
        tangents = torch.randn((directions, *inputs.shape), generator=generator, device=inputs.device,
                               dtype=inputs.dtype)
    elif tangents.shape[1:] != inputs.shape:
        raise SipgradError(f"tangents must be K x {tuple(inputs.shape)}, got {tuple(tangents.shape)}")
    estimate = torch.zeros_like(inputs)
    per_row = (-1,) + (1,) * (inputs.dim() - 1)
    with torch.no_grad(), quiet_forward_ad():
        for tangent in tangents:
            _, derivative = jvp(fn, (inputs,), (tangent,))
            if derivative.shape != inputs.shape[:1]:
                raise SipgradError(f"fn must return one scalar per row (shape {(inputs.shape[0],)}), "
                                   f"got {tuple(derivative.shape)}")
            estimate += derivative.reshape(per_row) * tangent
    return estimate / tangents.shape[0]


def target_logit(model: nn.Module, targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> model(x)[b, targets[b]]``: the per-row scalar that saliency explains."""
    index = targets.reshape(-1, 1)
    return lambda x: model(x).gather(1, index.to(x.device))[:, 0]


def forward_gradient_step(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          inputs: torch.Tensor, labels: torch.Tensor, lr: float, directions: int = 1, *,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """One SGD step on ``model``'s parameters with a forward-gradient estimate instead of backprop.

    Draws ``directions`` Gaussian directions over all trainable parameters, takes the
    directional derivative of ``loss_fn(model(inputs), labels)`` along each with one JVP,
    and moves the parameters by ``-lr * mean_k (d_k v_k)``. Updates the parameters in place
    and returns the loss (before the step). BatchNorm layers should be in eval mode (or
    absent): running-statistic updates are not defined in forward mode.
    """
    if directions < 1:
        raise SipgradError("forward_gradient_step needs at least one direction")
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    if not params:
        raise SipgradError("the model has no trainable parameters")

    def loss_of(trainable: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(functional_call(model, {**trainable, **frozen, **buffers}, (inputs,)), labels)

    update = {name: torch.zeros_like(p) for name, p in params.items()}
    with torch.no_grad(), quiet_forward_ad():
        for _ in range(directions):
            tangent = {name: torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                       for name, p in params.items()}
            loss, derivative = jvp(loss_of, (params,), (tangent,))
            for name in params:
                update[name] += derivative * tangent[name]
        for name, p in model.named_parameters():
            if name in update:
                p -= lr * update[name] / directions
    return loss.detach()
