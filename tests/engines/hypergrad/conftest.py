"""Small problems for the hypergradient tests (seconds, not minutes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sipgrad.datasets import SmallDataset, Split
from sipgrad.engines.hypergrad import (
    HeavyBall,
    classification_problem,
    seed_hyperparameters,
)


def synthetic_data(features: int = 6, seed: int = 0, sizes=(60, 40, 40)) -> SmallDataset:
    """Linearly separable-ish 3-class data, images of shape 1 x 1 x features."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(features, 3, generator=generator)
    splits = []
    for n in sizes:
        x = torch.rand(n, 1, 1, features, generator=generator)
        y = (x.reshape(n, -1) @ direction + 0.3 * torch.randn(n, 3, generator=generator)).argmax(1)
        splits.append(Split(x, y))
    return SmallDataset("synthetic", *splits, classes=3)


def tanh_mlp(features: int = 6, hidden: int = 5, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, classes))


def smooth_problem(steps: int = 8, dtype=torch.float64, update: str = "rfho", batch_size: int = 15, seed: int = 0):
    """A smooth (tanh) 3-layer net, so central differences are exact to O(eps^2)."""
    return classification_problem(synthetic_data(seed=seed), steps=steps, batch_size=batch_size, seed=seed,
                                  update=update, dtype=dtype, model=tanh_mlp(seed=seed))


def nonzero_hyper(problem, eta: float = 0.3, mu: float = 0.6) -> dict[str, torch.Tensor]:
    """Every coefficient away from 0, so every term of the update matters."""
    hyper = seed_hyperparameters(problem.inner, eta=eta, mu=mu, l1=0.01, l2=0.02)
    for k, name in enumerate(sorted(hyper)):
        hyper[name] = hyper[name] * (1 + 0.1 * k)  # distinct values: a swapped index shows
    return hyper


@pytest.fixture
def smooth():
    return smooth_problem()


def odd_stack(seed: int = 0) -> nn.Sequential:
    """Every recognised layer: Flatten, Identity, a bias-free Linear, two Linears in a row, a trailing ReLU."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 7, bias=False), nn.ReLU(), nn.Identity(), nn.Linear(7, 5),
                         nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU())


def relu_problem(model=None, steps: int = 6, update: str = "rfho", dtype=torch.float64, batch_size: int = 15):
    model = odd_stack() if model is None else model
    return classification_problem(synthetic_data(), steps=steps, batch_size=batch_size, update=update,
                                  dtype=dtype, model=model)


def forbid_autograd_gradient(monkeypatch) -> None:
    """Make the autograd gradient graph unavailable: a test then proves the hand-written pass was taken."""
    def refuse(*args, **kwargs):
        raise AssertionError("the autograd gradient graph was built")
    monkeypatch.setattr(HeavyBall, "gradient_graph", refuse)
