"""Deprecated: the old hypergradient API, kept as a thin layer over ``sipgrad.engines.hypergrad``.

``hypergradient``, ``Hypergradient``, ``module_losses``, ``tune_hyperparameters`` and
``HYPERPARAMETERS`` keep their signatures and warn (``DeprecationWarning``) when used.
They now run the new engine: PyTorch's heavy-ball convention (``torch.optim.SGD`` with
``lr``, ``momentum``, ``weight_decay``; the decay on every parameter, inside the momentum
buffer), forward mode with all tangents at once, reverse mode by stored trajectory.

Behaviour changed where the old one was wrong:

* a non-finite value raises ``NonFiniteError`` naming the step (it used to be clipped:
  ``_clip(nan)`` was 1.0);
* ``module_losses`` keeps frozen parameters (``requires_grad=False``) fixed; they used to
  be trained;
* ``tune_hyperparameters`` runs the new outer loop (Adam with step ``outer_lr``,
  projected onto valid ranges), so a weight decay that starts at 0 can grow (in log space
  it stayed 0 forever);
* a hyperparameter that carries a derivative (an outer ``jvp``, ``requires_grad``) is an
  error instead of silently getting derivative 0.

New code: ``from sipgrad.engines.hypergrad import ...`` (see docs/engines.md).
"""

from __future__ import annotations

import inspect
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from sipgrad.engines.hypergrad.modes import MODES
from sipgrad.engines.hypergrad.modes import hypergradient as _new_hypergradient
from sipgrad.engines.hypergrad.outer import AdamConfig, optimize_hyperparameters
from sipgrad.engines.hypergrad.problem import InnerProblem
from sipgrad.engines.hypergrad.updates import HeavyBall, Params, Penalty
from sipgrad.errors import SipgradError

_HYPERPARAMETERS = ("lr", "momentum", "weight_decay")
_DEFAULTS = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}


def _deprecated(name: str) -> None:
    warnings.warn(f"sipgrad.engines.hypergradient.{name} is deprecated; use sipgrad.engines.hypergrad "
                  f"(see docs/engines.md)", DeprecationWarning, stacklevel=3)


def __getattr__(name: str):
    if name == "HYPERPARAMETERS":
        _deprecated(name)
        return _HYPERPARAMETERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Hypergradient:
    """Validation loss after the unrolled training, and its derivative per hyperparameter."""

    val_loss: float
    grads: dict[str, float]
    mode: str
    params: Params = field(repr=False, default_factory=dict)


def _check(hyper: Mapping[str, float], steps: int, mode: str) -> dict[str, float]:
    unknown = set(hyper) - set(_HYPERPARAMETERS)
    if unknown:
        raise SipgradError(f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
                           f"choose from {', '.join(_HYPERPARAMETERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SipgradError("the unrolled training needs at least one step")
    if mode not in MODES:
        raise SipgradError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    return {**_DEFAULTS, **hyper}


def _problem(train_loss: Callable[[Params, int], torch.Tensor], val_loss: Callable[[Params], torch.Tensor],
             params: Mapping[str, torch.Tensor], steps: int) -> InnerProblem:
    start = {name: p.detach() for name, p in params.items()}
    update = HeavyBall(lambda weights, batch: train_loss(weights, batch[0]),
                       (Penalty("l2", "weight_decay", tuple(start)),), l2_scale=1.0,
                       learning_rate="lr", momentum="momentum")
    return InnerProblem(start, update, lambda step: (step,), val_loss, steps)


def _as_hyper(values: Mapping[str, float], problem: InnerProblem) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            out[name] = value  # checked (derivatives, finiteness) by the engine
        else:
            out[name] = torch.tensor(float(value), dtype=problem.dtype, device=problem.device)
    return out


def hypergradient(train_loss: Callable[[Params, int], torch.Tensor], val_loss: Callable[[Params], torch.Tensor],
                  params: Mapping[str, torch.Tensor], hyper: Mapping[str, float], steps: int,
                  mode: str = "reverse", wrt: tuple[str, ...] | None = None) -> Hypergradient:
    """Deprecated: d val_loss(w_T) / d h for ``lr``, ``momentum``, ``weight_decay`` (defaults 0.1, 0, 0)."""
    _deprecated("hypergradient")
    return _hypergradient(train_loss, val_loss, params, hyper, steps, mode, wrt)


def _hypergradient(train_loss: Callable[[Params, int], torch.Tensor], val_loss: Callable[[Params], torch.Tensor],
                   params: Mapping[str, torch.Tensor], hyper: Mapping[str, float], steps: int,
                   mode: str = "reverse", wrt: tuple[str, ...] | None = None) -> Hypergradient:
    values = _check(hyper, steps, mode)
    wrt = tuple(wrt or hyper)
    if not wrt or set(wrt) - set(_HYPERPARAMETERS):
        raise SipgradError(f"wrt must name hyperparameters among {', '.join(_HYPERPARAMETERS)}")
    problem = _problem(train_loss, val_loss, params, steps)
    result = _new_hypergradient(problem, _as_hyper(values, problem), mode, wrt)
    return Hypergradient(result.validation_loss, {name: float(g) for name, g in result.hypergradient.items()},
                         mode, result.weights)


def module_losses(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  train_batches: list[tuple[torch.Tensor, torch.Tensor]],
                  validation: tuple[torch.Tensor, torch.Tensor]) -> tuple[Callable, Callable, Params]:
    """Deprecated: ``(train_loss, val_loss, params)`` from a module; frozen parameters stay fixed."""
    _deprecated("module_losses")
    if not train_batches:
        raise SipgradError("no training batches")
    buffers = dict(model.named_buffers())
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    params = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def run(weights: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**frozen, **weights, **buffers}, (inputs,))

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
    """Deprecated: projected Adam (step ``outer_lr``) on the hyperparameters in ``hyper``.

    Returns one record per outer step: the hyperparameters used and the validation loss.
    """
    _deprecated("tune_hyperparameters")
    values = _check(hyper, steps, mode)
    problem = _problem(train_loss, val_loss, params, steps)
    history = []
    for outer in optimize_hyperparameters(problem, _as_hyper(values, problem), outer_steps, mode, tuple(hyper),
                                          AdamConfig(lr=outer_lr)):
        history.append({**{k: float(outer.used[k]) for k in hyper}, "val_loss": outer.result.validation_loss})
        if progress is not None:
            progress(1)
    return history


class _CallableModule(types.ModuleType):
    """This module, callable as the deprecated ``hypergradient`` function.

    ``from sipgrad.engines import hypergradient`` has always given the function, while
    ``import sipgrad.engines.hypergradient as legacy`` must give this module (with
    ``tune_hyperparameters`` and the rest). Both names are the same attribute of the package,
    so the module is the one object and calling it calls the function.
    """

    def __call__(self, *args, **kwargs):
        _deprecated("hypergradient")  # warned from here: the caller's line is the same frames up
        return _hypergradient(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(hypergradient)  # what inspect and help() show for the callable module
