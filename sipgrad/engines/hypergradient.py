"""Hypergradients through unrolled SGD with momentum, in reverse and in forward mode.

T steps of SGD with momentum (PyTorch's convention, plus L2 weight decay),

    g_t = grad L_train(w_t, t) + lambda w_t,   v_{t+1} = mu v_t + g_t,   w_{t+1} = w_t - eta v_{t+1},

make the final weights w_T a differentiable function of the hyperparameters h = (eta, mu,
lambda). The hypergradient is d L_val(w_T) / d h:

* **reverse mode** (Maclaurin, Duvenaud & Adams 2015, without their exact-reversal trick):
  build the whole unrolled graph with ``create_graph=True`` and backpropagate once. One
  pass for every hyperparameter, but memory grows with T.
* **forward mode** (Franceschi, Donini, Frasconi & Pontil 2017): push the tangent dw/dh_i
  forward with the iterates (``torch.func.jvp`` over the loop, with ``torch.func.grad``
  for the inner gradient: forward-over-reverse). Memory does not grow with T, but it takes
  one pass per hyperparameter.

Both give the same numbers (a test checks them against each other and against finite
differences); ``benchmarks/hypergradient_modes.py`` measures the trade-off.

The training problem is given as functions of a dict of parameter tensors:
``train_loss(params, step) -> scalar`` (``step`` lets it pick a mini-batch) and
``val_loss(params) -> scalar``; ``sipgrad.engines.hypergradient.module_losses`` builds them
from an ``nn.Module`` and data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from sipgrad.engines.forward import quiet_forward_ad
from sipgrad.errors import SipgradError

Params = dict[str, torch.Tensor]
HYPERPARAMETERS = ("lr", "momentum", "weight_decay")


def _unrolled_sgd(params: Params, lr: torch.Tensor, momentum: torch.Tensor, weight_decay: torch.Tensor, steps: int,
                  inner_grad: Callable[[Params, int], Params]) -> Params:
    weights = dict(params)
    velocity = {name: torch.zeros_like(w) for name, w in weights.items()}
    for step in range(steps):
        gradient = inner_grad(weights, step)
        for name in weights:
            g = gradient[name] + weight_decay * weights[name]
            velocity[name] = momentum * velocity[name] + g
            weights[name] = weights[name] - lr * velocity[name]
    return weights


@dataclass
class Hypergradient:
    """Validation loss after the unrolled training, and its derivative per hyperparameter."""

    val_loss: float
    grads: dict[str, float]
    mode: str
    params: Params = field(repr=False, default_factory=dict)


def _check(hyper: Mapping[str, float], steps: int, mode: str) -> dict[str, float]:
    unknown = set(hyper) - set(HYPERPARAMETERS)
    if unknown:
        raise SipgradError(f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
                           f"choose from {', '.join(HYPERPARAMETERS)}")
    if steps < 1:
        raise SipgradError("the unrolled training needs at least one step")
    if mode not in ("forward", "reverse"):
        raise SipgradError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    return {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, **hyper}


def hypergradient(train_loss: Callable[[Params, int], torch.Tensor], val_loss: Callable[[Params], torch.Tensor],
                  params: Mapping[str, torch.Tensor], hyper: Mapping[str, float], steps: int,
                  mode: str = "reverse", wrt: tuple[str, ...] | None = None) -> Hypergradient:
    """d val_loss(w_T) / d h for SGD with momentum unrolled over ``steps`` steps.

    Args:
        train_loss: ``(params, step) -> scalar`` training loss.
        val_loss: ``params -> scalar`` loss after training.
        params: initial parameters (not modified).
        hyper: ``lr``, ``momentum``, ``weight_decay`` (defaults 0.1, 0, 0).
        steps: unrolled SGD steps.
        mode: ``reverse`` (memory grows with steps) or ``forward`` (one pass per hyperparameter).
        wrt: hyperparameters to differentiate (default: those given in ``hyper``).
    """
    values = _check(hyper, steps, mode)
    wrt = tuple(wrt or hyper)
    if not wrt or set(wrt) - set(HYPERPARAMETERS):
        raise SipgradError(f"wrt must name hyperparameters among {', '.join(HYPERPARAMETERS)}")
    start = {name: p.detach() for name, p in params.items()}
    reference = next(iter(start.values()))
    as_tensor = {name: torch.tensor(value, dtype=reference.dtype, device=reference.device)
                 for name, value in values.items()}
    if mode == "reverse":
        return _reverse(train_loss, val_loss, start, as_tensor, steps, wrt)
    return _forward(train_loss, val_loss, start, as_tensor, steps, wrt)


def _reverse(train_loss, val_loss, start: Params, hyper: dict[str, torch.Tensor], steps: int,
             wrt: tuple[str, ...]) -> Hypergradient:
    hyper = {name: h.clone().requires_grad_(name in wrt) for name, h in hyper.items()}
    weights = {name: w.clone().requires_grad_(True) for name, w in start.items()}

    def inner_grad(current: Params, step: int) -> Params:
        loss = train_loss(current, step)
        gradients = torch.autograd.grad(loss, list(current.values()), create_graph=True)
        return dict(zip(current, gradients))

    with torch.enable_grad():
        final = _unrolled_sgd(weights, hyper["lr"], hyper["momentum"], hyper["weight_decay"], steps,
                              inner_grad)
        loss = val_loss(final)
        derivatives = torch.autograd.grad(loss, [hyper[name] for name in wrt])
    return Hypergradient(float(loss.detach()), {name: float(d) for name, d in zip(wrt, derivatives)}, "reverse",
                         {name: w.detach() for name, w in final.items()})


def _forward(train_loss, val_loss, start: Params, hyper: dict[str, torch.Tensor], steps: int,
             wrt: tuple[str, ...]) -> Hypergradient:
    inner_grad = grad(train_loss)  # torch.func: composes with the jvp below (forward-over-reverse)

    def objective(hyper_values: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Params]:
        chosen = dict(hyper, **dict(zip(wrt, hyper_values)))
        final = _unrolled_sgd(start, chosen["lr"], chosen["momentum"], chosen["weight_decay"],
                              steps, inner_grad)
        return val_loss(final), final

    primals = tuple(hyper[name] for name in wrt)
    derivatives, loss, final = {}, None, None
    for index, name in enumerate(wrt):  # one forward pass per hyperparameter
        tangents = tuple(torch.ones_like(p) if i == index else torch.zeros_like(p) for i, p in enumerate(primals))
        with quiet_forward_ad():
            (loss, final), (derivative, _) = jvp(lambda *values: objective(values), primals, tangents)
        derivatives[name] = float(derivative)
    return Hypergradient(float(loss), derivatives, "forward", {name: w.detach() for name, w in final.items()})


def module_losses(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  train_batches: list[tuple[torch.Tensor, torch.Tensor]],
                  validation: tuple[torch.Tensor, torch.Tensor]) -> tuple[Callable, Callable, Params]:
    """``(train_loss, val_loss, params)`` for ``hypergradient`` from a module and data.

    Step t trains on ``train_batches[t % len(train_batches)]``; buffers (e.g. BatchNorm
    running statistics) are constants, so use eval-mode normalisation or none.
    """
    if not train_batches:
        raise SipgradError("no training batches")
    buffers = dict(model.named_buffers())
    params = {name: p.detach().clone() for name, p in model.named_parameters()}

    def run(weights: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**weights, **buffers}, (inputs,))

    def train_loss(weights: Params, step: int) -> torch.Tensor:
        inputs, labels = train_batches[step % len(train_batches)]
        return loss_fn(run(weights, inputs), labels)

    def val_loss(weights: Params) -> torch.Tensor:
        return loss_fn(run(weights, validation[0]), validation[1])

    return train_loss, val_loss, params


def tune_hyperparameters(train_loss: Callable[[Params, int], torch.Tensor], val_loss: Callable[[Params], torch.Tensor],
                         params: Mapping[str, torch.Tensor], hyper: Mapping[str, float], steps: int,
                         outer_steps: int = 10, outer_lr: float = 0.1, mode: str = "reverse",
                         progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Gradient descent on the hyperparameters, each in a space where any step stays valid.

    ``lr`` and ``weight_decay`` move in log space (they stay positive), ``momentum`` in logit
    space (it stays in (0, 1); it starts from at least 0.001). Each outer step changes a
    log or logit by at most 1 (a factor of e), because hypergradients through long unrolls
    can be huge where the training becomes unstable. Returns one record per outer step: the
    hyperparameters used and the validation loss they gave.
    """
    current = _check(hyper, steps, mode)
    tuned = tuple(hyper)
    if "momentum" in tuned:
        current["momentum"] = min(max(current["momentum"], 1e-3), 1 - 1e-3)
    history = []
    for _ in range(outer_steps):
        result = hypergradient(train_loss, val_loss, params, {k: current[k] for k in tuned}, steps, mode)
        history.append({**{k: current[k] for k in tuned}, "val_loss": result.val_loss})
        for name in tuned:
            value, derivative = current[name], result.grads[name]
            if name == "momentum":  # d/d logit(m) = m (1 - m) d/dm
                logit = math.log(value / (1 - value)) - _clip(outer_lr * value * (1 - value) * derivative)
                current[name] = 1 / (1 + math.exp(-logit))
            elif value > 0:  # d/d log h = h d/dh
                current[name] = value * math.exp(-_clip(outer_lr * value * derivative))
        if progress is not None:
            progress(1)
    return history


def _clip(step: float, limit: float = 1.0) -> float:
    return max(-limit, min(limit, step))
