"""Hypergradients: forward mode equals reverse mode equals finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sipgrad.engines import hypergradient, module_losses, tune_hyperparameters
from sipgrad.errors import SipgradError


def _logistic_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.randn(4, 24, 5, generator=generator, dtype=torch.float64)  # 4 mini-batches
    direction = torch.randn(5, generator=generator, dtype=torch.float64)
    train_y = (train_x @ direction > 0).double()
    val_x = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    val_y = (val_x @ direction > 0).double()

    def train_loss(p, step):
        x, y = train_x[step % 4], train_y[step % 4]
        return F.binary_cross_entropy_with_logits(x @ p["w"] + p["b"], y)

    def val_loss(p):
        return F.binary_cross_entropy_with_logits(val_x @ p["w"] + p["b"], val_y)

    start = {"w": torch.zeros(5, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    return train_loss, val_loss, start


@pytest.mark.parametrize("steps", [1, 3, 25])
def test_forward_reverse_and_finite_differences_agree(steps):
    train_loss, val_loss, start = _logistic_problem()
    hyper = {"lr": 0.4, "momentum": 0.6, "weight_decay": 0.02}
    reverse = hypergradient(train_loss, val_loss, start, hyper, steps, mode="reverse")
    forward = hypergradient(train_loss, val_loss, start, hyper, steps, mode="forward")
    assert reverse.val_loss == pytest.approx(forward.val_loss, rel=1e-12)
    for name, value in hyper.items():
        assert forward.grads[name] == pytest.approx(reverse.grads[name], rel=1e-9, abs=1e-12)
        eps = 1e-6
        up = hypergradient(train_loss, val_loss, start, {**hyper, name: value + eps}, steps).val_loss
        down = hypergradient(train_loss, val_loss, start, {**hyper, name: value - eps}, steps).val_loss
        assert reverse.grads[name] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    if steps == 1:  # the first step has no velocity yet: momentum cannot matter
        assert reverse.grads["momentum"] == 0.0
    torch.testing.assert_close(reverse.params["w"], forward.params["w"])
    assert torch.equal(start["w"], torch.zeros(5, dtype=torch.float64))  # the start point is not modified


def test_one_step_on_a_quadratic_matches_the_closed_form():
    a, b, w0 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), torch.tensor([3.0, 1.0])
    lr = 0.3
    result = hypergradient(lambda p, t: 0.5 * ((p["w"] - a) ** 2).sum(), lambda p: 0.5 * ((p["w"] - b) ** 2).sum(),
                           {"w": w0}, {"lr": lr}, steps=1, mode="forward")
    w1 = w0 - lr * (w0 - a)
    assert result.grads == {"lr": pytest.approx(float(((w1 - b) * -(w0 - a)).sum()), rel=1e-6)}
    assert result.val_loss == pytest.approx(float(0.5 * ((w1 - b) ** 2).sum()), rel=1e-6)


def test_module_losses_and_tuning_lower_the_validation_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    train_loss, val_loss, params = module_losses(model, F.cross_entropy, batches, (x[64:], y[64:]))
    forward = hypergradient(train_loss, val_loss, params, {"lr": 0.05, "momentum": 0.5}, 8, mode="forward")
    reverse = hypergradient(train_loss, val_loss, params, {"lr": 0.05, "momentum": 0.5}, 8, mode="reverse")
    assert forward.grads["lr"] == pytest.approx(reverse.grads["lr"], rel=1e-8)
    assert forward.grads["lr"] < 0  # a too-small learning rate: raising it lowers the loss
    history = tune_hyperparameters(train_loss, val_loss, params, {"lr": 0.05}, steps=8, outer_steps=6, outer_lr=2.0)
    assert history[-1]["lr"] > history[0]["lr"] and history[-1]["val_loss"] < history[0]["val_loss"]


def test_tuning_momentum_stays_valid_and_improves():
    train_loss, val_loss, start = _logistic_problem()
    history = tune_hyperparameters(train_loss, val_loss, start, {"lr": 0.05, "momentum": 0.0}, steps=10,
                                   outer_steps=8, outer_lr=5.0)
    assert history[0]["momentum"] == pytest.approx(1e-3)  # moved off 0, where logit space has no gradient
    assert all(0 < h["momentum"] < 1 and h["lr"] > 0 for h in history)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    # A step changes a log or logit by at most 1, however large the hypergradient.
    for before, after in zip(history, history[1:]):
        assert abs(math.log(after["lr"] / before["lr"])) <= 1 + 1e-9


@pytest.mark.parametrize("kwargs, message", [
    ({"hyper": {"learning_rate": 0.1}}, "unknown hyperparameter"),
    ({"mode": "sideways"}, "mode must be"),
    ({"steps": 0}, "at least one step"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    train_loss, val_loss, start = _logistic_problem()
    arguments = {"hyper": {"lr": 0.1}, "steps": 2, "mode": "reverse", **kwargs}
    with pytest.raises(SipgradError, match=message):
        hypergradient(train_loss, val_loss, start, **arguments)
