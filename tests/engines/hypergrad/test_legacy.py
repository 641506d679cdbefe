"""The deprecated ``sipgrad.engines.hypergradient`` API: same signatures, warnings, and the old bugs fixed."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from sipgrad.engines.hypergrad import NonFiniteError
from sipgrad.errors import SipgradError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _legacy():
    from sipgrad.engines import hypergradient, module_losses, tune_hyperparameters

    return hypergradient, module_losses, tune_hyperparameters


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


def test_every_old_name_warns():
    from sipgrad import engines
    hypergradient, module_losses, tune = _legacy()
    train_loss, val_loss, start = _logistic_problem()
    with pytest.warns(DeprecationWarning, match="hypergrad"):
        hypergradient(train_loss, val_loss, start, {"lr": 0.1}, 2)
    with pytest.warns(DeprecationWarning):
        assert engines.HYPERPARAMETERS == ("lr", "momentum", "weight_decay")
    with pytest.warns(DeprecationWarning):
        tune(train_loss, val_loss, start, {"lr": 0.1}, 2, outer_steps=1)
    with pytest.warns(DeprecationWarning):
        module_losses(torch.nn.Linear(2, 2), F.cross_entropy, [(torch.zeros(1, 2), torch.zeros(1).long())],
                      (torch.zeros(1, 2), torch.zeros(1).long()))


@pytest.mark.parametrize("steps", [1, 3, 25])
def test_forward_reverse_and_finite_differences_agree(steps):
    hypergradient, _, _ = _legacy()
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
    hypergradient, _, _ = _legacy()
    a, b, w0 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), torch.tensor([3.0, 1.0])
    lr = 0.3
    result = hypergradient(lambda p, t: 0.5 * ((p["w"] - a) ** 2).sum(), lambda p: 0.5 * ((p["w"] - b) ** 2).sum(),
                           {"w": w0}, {"lr": lr}, steps=1, mode="forward")
    w1 = w0 - lr * (w0 - a)
    assert result.grads == {"lr": pytest.approx(float(((w1 - b) * -(w0 - a)).sum()), rel=1e-6)}
    assert result.val_loss == pytest.approx(float(0.5 * ((w1 - b) ** 2).sum()), rel=1e-6)


def test_weight_decay_is_inside_momentum_as_in_torch_optim_sgd():
    hypergradient, _, _ = _legacy()
    a = torch.tensor([1.0, -2.0], dtype=torch.float64)
    w0 = torch.tensor([3.0, 1.0], dtype=torch.float64)
    result = hypergradient(lambda p, t: 0.5 * ((p["w"] - a) ** 2).sum(), lambda p: (p["w"] ** 2).sum(),
                           {"w": w0}, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.5}, steps=4)
    w = w0.clone().requires_grad_()
    optimizer = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(4):
        optimizer.zero_grad()
        (0.5 * ((w - a) ** 2).sum()).backward()
        optimizer.step()
    torch.testing.assert_close(result.params["w"], w.detach(), rtol=1e-13, atol=1e-13)


def test_module_losses_keeps_frozen_parameters_fixed_and_tuning_lowers_the_loss():
    _, module_losses, tune = _legacy()
    hypergradient = _legacy()[0]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    train_loss, val_loss, params = module_losses(model, F.cross_entropy, batches, (x[64:], y[64:]))
    assert "0.weight" not in params
    forward = hypergradient(train_loss, val_loss, params, {"lr": 0.05, "momentum": 0.5}, 8, mode="forward")
    reverse = hypergradient(train_loss, val_loss, params, {"lr": 0.05, "momentum": 0.5}, 8, mode="reverse")
    assert "0.weight" not in forward.params and torch.equal(model[0].weight, frozen)
    assert forward.grads["lr"] == pytest.approx(reverse.grads["lr"], rel=1e-8)
    assert forward.grads["lr"] < 0  # a too-small learning rate: raising it lowers the loss
    history = tune(train_loss, val_loss, params, {"lr": 0.05}, steps=8, outer_steps=6, outer_lr=0.02)
    assert history[-1]["lr"] > history[0]["lr"] and history[-1]["val_loss"] < history[0]["val_loss"]


def test_tuning_moves_a_weight_decay_that_starts_at_zero():
    """Train towards a, validate at 0: decay helps, so its hypergradient is negative and it must grow from 0."""
    _, _, tune = _legacy()
    a = torch.tensor([2.0, -1.0], dtype=torch.float64)
    history = tune(lambda p, t: 0.5 * ((p["w"] - a) ** 2).sum(), lambda p: 0.5 * (p["w"] ** 2).sum(),
                   {"w": torch.zeros(2, dtype=torch.float64)}, {"lr": 0.1, "weight_decay": 0.0}, steps=10,
                   outer_steps=4, outer_lr=0.05)
    assert history[0]["weight_decay"] == 0.0
    assert history[1]["weight_decay"] == pytest.approx(0.05)  # one Adam step up from 0
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_a_diverging_run_is_an_error_not_a_clipped_step():
    _, _, tune = _legacy()
    _, val_loss, start = _logistic_problem()
    with pytest.raises(NonFiniteError, match="inner step"):
        tune(lambda p, t: 1e3 * (p["w"] ** 2).sum(), val_loss, start, {"lr": 10.0, "momentum": 0.5}, steps=200,
             outer_steps=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"hyper": {"learning_rate": 0.1}}, "unknown hyperparameter"),
    ({"mode": "sideways"}, "mode must be"),
    ({"steps": 0}, "at least one step"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    hypergradient, _, _ = _legacy()
    train_loss, val_loss, start = _logistic_problem()
    arguments = {"hyper": {"lr": 0.1}, "steps": 2, "mode": "reverse", **kwargs}
    with pytest.raises(SipgradError, match=message):
        hypergradient(train_loss, val_loss, start, **arguments)


def test_the_old_module_is_a_module_and_still_callable_as_the_old_function():
    """``import sipgrad.engines.hypergradient as legacy`` gave the function, hiding the module's names."""
    import sipgrad.engines.hypergradient as legacy
    from sipgrad.engines import hypergradient

    assert legacy is hypergradient and callable(legacy.tune_hyperparameters) and callable(legacy.module_losses)
    train_loss, val_loss, start = _logistic_problem()
    with pytest.warns(DeprecationWarning, match="hypergradient is deprecated") as caught:
        result = legacy(train_loss, val_loss, start, {"lr": 0.5}, steps=3)
    # attributed to the caller's line: Python shows DeprecationWarnings raised in __main__ by default
    assert [w.filename for w in caught] == [__file__]
    assert list(inspect.signature(legacy).parameters)[:5] == ["train_loss", "val_loss", "params", "hyper", "steps"]
    direct = legacy.hypergradient(train_loss, val_loss, start, {"lr": 0.5}, steps=3)
    assert result.val_loss == direct.val_loss and result.grads == direct.grads and result.grads["lr"] != 0
