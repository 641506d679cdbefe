"""The outer loop: Adam on the hypergradient, projected back onto each hyperparameter's valid range.

Projection (not a change of variables such as log or logit) keeps the hypergradient the
one the modes computed and lets a hyperparameter sit on, and leave, the edge of its
range: a penalty coefficient that starts at 0 moves up as soon as its hypergradient turns
negative (in log space it could never leave 0). RFHO does the same (Adam, then a
positivity projection), with Adam's step 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from sipgrad.engines.hypergrad.modes import HypergradientResult, check_arguments, hypergradient
from sipgrad.engines.hypergrad.problem import InnerProblem
from sipgrad.errors import SipgradError
from sipgrad.validation import check_count, check_finite

#: Valid range by name prefix (the longest matching prefix wins): penalties >= 0,
#: learning rates > 0, momentum in [0, 1).
BOUNDS: dict[str, tuple[float, float]] = {
    "rho": (0.0, math.inf),
    "weight_decay": (0.0, math.inf),
    "eta": (1e-8, math.inf),
    "lr": (1e-8, math.inf),
    "mu": (0.0, 1.0 - 1e-6),
    "momentum": (0.0, 1.0 - 1e-6),
}


def bounds_for(name: str, bounds: Mapping[str, tuple[float, float]] = BOUNDS) -> tuple[float, float]:
    matches = [prefix for prefix in bounds if name.startswith(prefix)]
    return bounds[max(matches, key=len)] if matches else (-math.inf, math.inf)


@dataclass(frozen=True)
class AdamConfig:
    """Adam's settings for the hyperparameters (RFHO's defaults)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_finite("outer learning rate", self.lr, positive=True)
        check_finite("Adam eps", self.eps, positive=True)
        for name in ("beta1", "beta2"):
            check_finite(f"Adam {name}", getattr(self, name))
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise SipgradError(f"Adam betas must be in [0, 1), got {self.beta1}, {self.beta2}")


class ProjectedAdam:
    """Adam steps on named hyperparameter tensors, each followed by a clamp onto its range."""

    def __init__(self, config: AdamConfig = AdamConfig(),
                 bounds: Mapping[str, tuple[float, float]] = BOUNDS) -> None:
        self.config, self.bounds = config, bounds
        self.first: dict[str, torch.Tensor] = {}
        self.second: dict[str, torch.Tensor] = {}
        self.count = 0

    def project(self, hyper: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in hyper.items():
            low, high = bounds_for(name, self.bounds)
            out[name] = value.clamp(low, high)
        return out

    def step(self, hyper: Mapping[str, torch.Tensor], gradient: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        self.count += 1
        updated = dict(hyper)
        for name, g in gradient.items():
            if name not in self.first:
                self.first[name], self.second[name] = torch.zeros_like(g), torch.zeros_like(g)
            self.first[name] = c.beta1 * self.first[name] + (1 - c.beta1) * g
            self.second[name] = c.beta2 * self.second[name] + (1 - c.beta2) * g * g
            m_hat = self.first[name] / (1 - c.beta1 ** self.count)
            v_hat = self.second[name] / (1 - c.beta2 ** self.count)
            updated[name] = hyper[name] - c.lr * m_hat / (v_hat.sqrt() + c.eps)
        return self.project(updated)


@dataclass(frozen=True)
class OuterStep:
    """One outer step: the hypergradient at ``used`` and the hyperparameters after Adam (``updated``)."""

    step: int
    result: HypergradientResult
    used: dict[str, torch.Tensor]
    updated: dict[str, torch.Tensor]


def optimize_hyperparameters(problem: InnerProblem, hyper: Mapping[str, torch.Tensor], outer_steps: int,
                             mode: str = "reverse", wrt: Sequence[str] | None = None,
                             adam: AdamConfig = AdamConfig(), bounds: Mapping[str, tuple[float, float]] = BOUNDS,
                             **mode_options) -> Iterator[OuterStep]:
    """Yield ``outer_steps`` steps of projected Adam on the hypergradient (lazily: stop any time).

    Every outer step retrains from the same start weights on the same mini-batches, so the
    objective is one deterministic function of the hyperparameters. The arguments are checked
    here, at the call, not at the first step: a start outside its range is an error (the
    projection would move it without a word).
    """
    check_count("outer_steps", outer_steps)
    start = {name: torch.as_tensor(v, dtype=problem.dtype, device=problem.device) for name, v in hyper.items()}
    for name, value in start.items():
        low, high = bounds_for(name, bounds)
        if bool(((value < low) | (value > high)).any()):
            raise SipgradError(f"start {name}={value.tolist()} is outside its range [{low:g}, {high:g}]")
    check_arguments(problem, start, mode, wrt, **mode_options)
    return _outer_steps(problem, start, outer_steps, mode, wrt, ProjectedAdam(adam, bounds), mode_options)


def _outer_steps(problem: InnerProblem, current: dict[str, torch.Tensor], outer_steps: int, mode: str,
                 wrt: Sequence[str] | None, optimizer: ProjectedAdam, mode_options: dict) -> Iterator[OuterStep]:
    for step in range(outer_steps):
        result = hypergradient(problem, current, mode, wrt, **mode_options)
        updated = optimizer.step(current, result.hypergradient)
        yield OuterStep(step, result, current, updated)
        current = updated
