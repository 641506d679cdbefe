"""The outer loop: projected Adam on the hypergradient."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.engines.hypergrad import (
    AdamConfig,
    ProjectedAdam,
    bounds_for,
    optimize_hyperparameters,
)
from sipgrad.errors import SipgradError
from tests.engines.hypergrad.conftest import nonzero_hyper, smooth_problem

F64 = torch.float64


@settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(0.5, 2.0), min_size=3, max_size=3),
       gradients=st.lists(st.lists(st.floats(-5, 5), min_size=3, max_size=3), min_size=1, max_size=6),
       lr=st.floats(1e-3, 0.1))
def test_unconstrained_steps_are_torch_adams(values, gradients, lr):
    names = ("a", "b", "c")  # no bounds for these names
    hyper = {n: torch.tensor(v, dtype=F64) for n, v in zip(names, values)}
    reference = [torch.tensor(v, dtype=F64, requires_grad=True) for v in values]
    torch_adam = torch.optim.Adam(reference, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    ours = ProjectedAdam(AdamConfig(lr=lr))
    for row in gradients:
        hyper = ours.step(hyper, {n: torch.tensor(g, dtype=F64) for n, g in zip(names, row)})
        for p, g in zip(reference, row):
            p.grad = torch.tensor(g, dtype=F64)
        torch_adam.step()
    for n, p in zip(names, reference):
        assert float(hyper[n]) == pytest.approx(float(p.detach()), rel=1e-12, abs=1e-14)


def test_projection_keeps_ranges_and_a_coefficient_at_zero_can_leave_it():
    adam = ProjectedAdam(AdamConfig(lr=0.5))
    hyper = {"rho_l1_0": torch.tensor(0.0), "rho_l2_0": torch.tensor(0.0), "eta": torch.tensor(0.01),
             "mu": torch.tensor(0.9)}
    grads = {"rho_l1_0": torch.tensor(-3.0), "rho_l2_0": torch.tensor(2.0), "eta": torch.tensor(50.0),
             "mu": torch.tensor(-50.0)}
    after = adam.step(hyper, grads)
    assert float(after["rho_l1_0"]) == pytest.approx(0.5)  # negative hypergradient: up from 0 by one Adam step
    assert float(after["rho_l2_0"]) == 0.0  # positive: projected back onto 0
    assert 0 < float(after["eta"]) <= 1e-7  # a huge step would make eta negative: clamped at its floor
    assert float(after["mu"]) < 1.0 and float(after["mu"]) == pytest.approx(1 - 1e-6)
    assert bounds_for("rho_l2_3") == (0.0, math.inf) and bounds_for("momentum")[1] < 1
    assert bounds_for("something") == (-math.inf, math.inf)


@pytest.mark.parametrize("name, value", [("mu", 1.5), ("mu", -0.1), ("rho_l2_0", -0.2), ("eta", 0.0)])
def test_a_start_outside_its_range_is_refused_at_the_call_not_projected(name, value):
    problem = smooth_problem(steps=2)
    hyper = nonzero_hyper(problem)
    with pytest.raises(SipgradError, match=rf"start {name}=.* is outside its range"):
        optimize_hyperparameters(problem.inner, {**hyper, name: torch.tensor(value, dtype=F64)}, 1)
    edge = {**hyper, "mu": torch.tensor(0.0, dtype=F64), "rho_l1_0": torch.tensor(0.0, dtype=F64)}
    first = next(optimize_hyperparameters(problem.inner, edge, 1))
    assert float(first.used["mu"]) == 0.0 and float(first.used["rho_l1_0"]) == 0.0  # the edges are inside


def test_outer_loop_lowers_the_validation_error_and_reports_the_values_it_used():
    problem = smooth_problem(steps=10)
    hyper = nonzero_hyper(problem, eta=0.05, mu=0.3)
    steps = list(optimize_hyperparameters(problem.inner, hyper, 6, "forward", adam=AdamConfig(lr=0.05)))
    assert len(steps) == 6
    losses = [s.result.validation_loss for s in steps]
    assert losses[-1] < losses[0] - 1e-3
    for before, after in pairwise(steps):
        for name in hyper:
            assert torch.equal(after.used[name], before.updated[name])
    assert float(steps[-1].used["eta"]) > 0.05  # the learning rate was too small and grew


@pytest.mark.parametrize("kwargs, message", [({"lr": 0.0}, "outer learning rate"), ({"beta1": 1.0}, "betas"),
                                             ({"eps": 0.0}, "eps"), ({"eps": math.inf}, "Adam eps must be a positive finite"),
                                             ({"lr": True}, "outer learning rate must be a positive finite number, got True"),
                                             ({"beta2": math.nan}, "Adam beta2 must be a finite number")])
def test_adam_config_validates(kwargs, message):
    with pytest.raises(SipgradError, match=message):
        AdamConfig(**kwargs)


def test_outer_steps_must_be_positive(smooth):
    with pytest.raises(SipgradError, match="outer_steps"):
        next(optimize_hyperparameters(smooth.inner, nonzero_hyper(smooth), 0))


@pytest.mark.parametrize("mode, options, message", [
    ("sideways", {}, "mode must be one of"),
    ("forward", {"checkpoint_every": 2}, "forward mode takes no option checkpoint_every"),
    ("reverse", {"checkpoint_every": 0}, "checkpoint_every .* must be a positive integer"),
    ("reverse", {"checkpoint_every": None, "store_activations": True}, "store_activations needs"),
])
def test_modes_and_their_options_are_checked_at_the_call_before_any_inner_step(smooth, monkeypatch, mode, options,
                                                                                message):
    import sipgrad.engines.hypergrad.outer as outer

    monkeypatch.setattr(outer, "hypergradient", lambda *a, **k: pytest.fail("an inner run started"))
    with pytest.raises(SipgradError, match=message):
        optimize_hyperparameters(smooth.inner, nonzero_hyper(smooth), 1, mode, **options)


def test_run_experiment_checks_every_modes_arguments_at_the_call():
    from sipgrad.datasets import load_digits
    from sipgrad.engines.hypergrad import classification_problem, run_experiment, seed_hyperparameters

    problem = classification_problem(load_digits(), steps=2, batch_size=20, hidden=(4,))
    hyper = seed_hyperparameters(problem.inner)
    with pytest.raises(SipgradError, match="forward mode takes no option checkpoint_every"):
        run_experiment(problem, hyper, 1, mode_options={"forward": {"checkpoint_every": 2}})
    with pytest.raises(SipgradError, match=r"start mu=1\.5"):
        run_experiment(problem, {**hyper, "mu": torch.tensor(1.5)}, 1)
    assert [r.mode for r in run_experiment(problem, hyper, 1)] == ["forward", "reverse"]
