"""Forward-HG and reverse-HG: exact, equal to each other, to finite differences and to a matrix recurrence."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.datasets import load_digits
from sipgrad.engines.hypergrad import (
    HeavyBall,
    InnerProblem,
    NonFiniteError,
    Penalty,
    classification_problem,
    epoch_schedule,
    forward_hypergradient,
    hypergradient,
    reverse_hypergradient,
    seed_hyperparameters,
)
from sipgrad.engines.hypergrad.modes import tensor_mib
from sipgrad.errors import SipgradError
from tests.engines.hypergrad.conftest import (
    nonzero_hyper,
    smooth_problem,
    synthetic_data,
)

F64 = torch.float64


def _close(a: dict, b: dict, rel: float) -> None:
    for name, value in a.items():
        scale = max(float(b[name].abs().max()), 1e-6)
        assert float((value - b[name]).abs().max()) <= rel * scale, (name, value, b[name])


def test_forward_and_reverse_match_central_differences_in_float64(smooth):
    hyper = nonzero_hyper(smooth)
    forward = forward_hypergradient(smooth.inner, hyper)
    reverse = reverse_hypergradient(smooth.inner, hyper)
    eps = 1e-6
    for name, value in hyper.items():
        up = forward_hypergradient(smooth.inner, {**hyper, name: value + eps}).validation_loss
        down = forward_hypergradient(smooth.inner, {**hyper, name: value - eps}).validation_loss
        numeric = (up - down) / (2 * eps)
        assert abs(numeric) > 1e-7, name  # every hyperparameter matters here
        for result in (forward, reverse):
            assert float(result.hypergradient[name]) == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, result.mode)


def test_all_modes_and_variants_agree_to_1e_9_in_float64(smooth):
    hyper = nonzero_hyper(smooth)
    reference = forward_hypergradient(smooth.inner, hyper)
    variants = [forward_hypergradient(smooth.inner, hyper, fused=False), reverse_hypergradient(smooth.inner, hyper),
                reverse_hypergradient(smooth.inner, hyper, checkpoint_every=3),
                reverse_hypergradient(smooth.inner, hyper, checkpoint_every=None),
                reverse_hypergradient(smooth.inner, hyper, fused=False),
                reverse_hypergradient(smooth.inner, hyper, fused=False, checkpoint_every=3),
                reverse_hypergradient(smooth.inner, hyper, store_activations=True),
                reverse_hypergradient(smooth.inner, hyper, store_activations=True, checkpoint_every=3),
                reverse_hypergradient(smooth.inner, hyper, store_activations=True, checkpoint_every=5)]
    for result in variants:
        _close(result.hypergradient, reference.hypergradient, 1e-9)
        assert result.validation_loss == pytest.approx(reference.validation_loss, rel=1e-13)
        for name, w in reference.weights.items():
            torch.testing.assert_close(result.weights[name], w, rtol=1e-12, atol=1e-13)


def test_every_variant_takes_only_penalty_coefficients_as_wrt():
    """With eta and mu fixed, the biases (not penalised) depend on no differentiated hyperparameter: their
    gradient must still reach the step (the whole graph used to refuse them)."""
    problem = classification_problem(load_digits(), steps=4, batch_size=20, hidden=(8,), dtype=F64)
    hyper = seed_hyperparameters(problem.inner, eta=0.1, mu=0.5, l1=1e-3, l2=1e-3)
    wrt = ["rho_l1_0", "rho_l2_1"]
    reference = forward_hypergradient(problem.inner, hyper, wrt=wrt)
    assert set(reference.hypergradient) == set(wrt) and all(float(v) != 0 for v in reference.hypergradient.values())
    for options in ({}, {"checkpoint_every": None}, {"fused": False}, {"checkpoint_every": 3},
                    {"store_activations": True}):
        _close(reverse_hypergradient(problem.inner, hyper, wrt=wrt, **options).hypergradient,
               reference.hypergradient, 1e-9)
    _close(forward_hypergradient(problem.inner, hyper, wrt=wrt, fused=False).hypergradient,
           reference.hypergradient, 1e-9)


def test_forward_and_reverse_agree_to_1e_4_in_float32_at_t_100():
    problem = classification_problem(load_digits(), steps=100, batch_size=50, seed=1, hidden=(24, 24))
    hyper = seed_hyperparameters(problem.inner, eta=0.05, mu=0.5, l1=1e-4, l2=1e-3)
    forward = forward_hypergradient(problem.inner, hyper)
    reverse = reverse_hypergradient(problem.inner, hyper)
    _close(forward.hypergradient, reverse.hypergradient, 1e-4)
    stored = reverse_hypergradient(problem.inner, hyper, store_activations=True)
    _close(forward.hypergradient, stored.hypergradient, 1e-4)
    assert float(forward.hypergradient["eta"]) < 0  # a small learning rate: raising it helps


def test_epoch_schedule_visits_each_example_once_an_epoch_and_reshuffles_between_epochs():
    schedule = epoch_schedule(23, 5, 10, seed=4)  # 4 whole batches an epoch (3 examples left out each time)
    assert schedule.shape == (10, 5)
    epochs = [schedule[0:4].reshape(-1), schedule[4:8].reshape(-1), schedule[8:10].reshape(-1)]
    for epoch in epochs:
        assert len(set(epoch.tolist())) == len(epoch) and int(epoch.min()) >= 0 and int(epoch.max()) < 23
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation every epoch, not one order repeated
    assert torch.equal(epoch_schedule(23, 5, 10, seed=4), schedule)
    assert not torch.equal(epoch_schedule(23, 5, 10, seed=5), schedule)


def test_trained_weights_are_sgd_on_the_scheduled_mini_batches_in_order():
    problem = smooth_problem(steps=7, update="torch", batch_size=15, seed=2)
    hyper = {name: torch.zeros((), dtype=F64) for name in problem.inner.update.hyperparameters}
    hyper.update(eta=torch.tensor(0.3, dtype=F64), mu=torch.tensor(0.8, dtype=F64))
    schedule = epoch_schedule(len(problem.data.train), 15, 7, seed=2)  # 4 batches an epoch: crosses an epoch
    assert all(sorted(torch.cat(list(schedule[:4])).tolist()) == sorted(set(torch.cat(list(schedule[:4])).tolist()))
               for _ in [0])
    model = problem.model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.8)
    inputs, labels = problem.data.train.flat().double(), problem.data.train.labels
    for row in schedule:
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[row]), labels[row]).backward()
        optimizer.step()
    for result in (forward_hypergradient(problem.inner, hyper), reverse_hypergradient(problem.inner, hyper)):
        for name, p in model.named_parameters():
            torch.testing.assert_close(result.weights[name], p.detach(), rtol=1e-12, atol=1e-12)


def _quadratic_problem(a: np.ndarray, b: np.ndarray, c: np.ndarray, steps: int) -> InnerProblem:
    a_t, b_t, c_t = (torch.tensor(x) for x in (a, b, c))

    def loss(p, batch):
        (t,) = batch
        w = p["w"][:, 0]
        return 0.5 * w @ a_t @ w - (b_t[t % len(b_t)]) @ w

    update = HeavyBall(loss, (Penalty("l2", "rho", ("w",)), Penalty("l1", "l1", ("w",))))
    return InnerProblem({"w": torch.ones(len(c), 1, dtype=F64)}, update, lambda t: (t,),
                        lambda p: 0.5 * ((p["w"][:, 0] - c_t) ** 2).sum(), steps)


def _explicit_recurrence(a, b, c, eta, mu, rho, l1, steps):
    """The tangent recurrence with explicit matrices: Z = d(w, v)/d(eta, mu, rho, l1), n x 4 each."""
    n = len(c)
    w, v = np.ones(n), np.zeros(n)
    zw, zv = np.zeros((n, 4)), np.zeros((n, 4))
    hessian = a + 2 * rho * np.eye(n)
    for t in range(steps):
        g = a @ w - b[t % len(b)] + 2 * rho * w + l1 * np.sign(w)
        dg = hessian @ zw
        dg[:, 2] += 2 * w
        dg[:, 3] += np.sign(w)
        zv = mu * zv + dg
        zv[:, 1] += v
        v = mu * v + g
        zw = zw - eta * zv
        zw[:, 0] -= v
        w = w - eta * v
    return 0.5 * ((w - c) ** 2).sum(), (w - c) @ zw


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), eta=st.floats(0.01, 0.2), mu=st.floats(0.0, 0.9), rho=st.floats(0.0, 0.5),
       l1=st.floats(0.0, 0.1), steps=st.integers(1, 12))
def test_quadratic_problem_matches_the_explicit_matrix_recurrence(seed, eta, mu, rho, l1, steps):
    rng = np.random.default_rng(seed)
    n = 4
    q = rng.standard_normal((n, n))
    a, b, c = q @ q.T / n + 0.5 * np.eye(n), rng.standard_normal((3, n)), rng.standard_normal(n)
    problem = _quadratic_problem(a, b, c, steps)
    hyper = {"eta": eta, "mu": mu, "rho": rho, "l1": l1}
    loss, want = _explicit_recurrence(a, b, c, eta, mu, rho, l1, steps)
    for mode in ("forward", "reverse"):
        result = hypergradient(problem, {k: torch.tensor(v, dtype=F64) for k, v in hyper.items()}, mode)
        assert result.validation_loss == pytest.approx(loss, rel=1e-10, abs=1e-12)
        got = np.array([float(result.hypergradient[k]) for k in hyper])
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_state_memory_is_m_plus_1_states_forward_and_t_plus_2_reverse():
    hyper = None
    state_mib = None
    for steps in (3, 9):
        problem = smooth_problem(steps=steps)
        hyper = nonzero_hyper(problem)
        state_mib = 2 * tensor_mib(problem.inner.weights.values())  # weights and velocity
        hyper_mib = tensor_mib(hyper.values())
        forward = forward_hypergradient(problem.inner, hyper)
        reverse = reverse_hypergradient(problem.inner, hyper)
        assert forward.state_mib == pytest.approx((len(hyper) + 1) * state_mib + hyper_mib, rel=1e-12)
        assert reverse.state_mib == pytest.approx((steps + 2) * state_mib + hyper_mib, rel=1e-12)
    # checkpointing every 3 of 9 steps keeps 3 checkpoints, the 2 recomputed states of a segment, final and adjoint
    checkpointed = reverse_hypergradient(problem.inner, hyper, checkpoint_every=3)
    assert checkpointed.state_mib == pytest.approx((3 + 2 + 2) * state_mib + tensor_mib(hyper.values()), rel=1e-12)


def test_stored_activations_cost_the_same_per_step_and_are_kept_per_segment_when_checkpointing():
    """state(T) = (T + 2) states + T steps' activations; every 3 of 9: 2 checkpoints, a segment of 3 states with
    the activations of its first 2 (its last step's backward step rebuilds its own, transient as in the plain
    trajectory, and without the weight gradient and the state update, which nothing reads)."""
    results, state_mib, hyper_mib = {}, None, None
    for steps in (3, 9):
        problem = smooth_problem(steps=steps)
        hyper = nonzero_hyper(problem)
        state_mib = 2 * tensor_mib(problem.inner.weights.values())
        hyper_mib = tensor_mib(hyper.values())
        results[steps] = reverse_hypergradient(problem.inner, hyper, store_activations=True).state_mib
        plain = reverse_hypergradient(problem.inner, hyper).state_mib
        assert results[steps] > plain
    per_step = (results[3] - 5 * state_mib - hyper_mib) / 3  # one step's graph, beyond the weights it shares
    assert per_step > 0.5 * state_mib  # batch 15 x width 5, several tensors per layer
    assert results[9] == pytest.approx(11 * state_mib + 9 * per_step + hyper_mib, rel=1e-12)
    checkpointed = reverse_hypergradient(problem.inner, hyper, store_activations=True, checkpoint_every=3)
    assert checkpointed.state_mib == pytest.approx((2 + 3 + 2) * state_mib + 2 * per_step + hyper_mib, rel=1e-12)


def test_results_do_not_depend_on_threads_or_on_which_hyperparameters_share_the_tangent_batch(smooth):
    hyper = nonzero_hyper(smooth)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = forward_hypergradient(smooth.inner, hyper)
        torch.set_num_threads(2)
        two = forward_hypergradient(smooth.inner, hyper)
    finally:
        torch.set_num_threads(before)
    _close(one.hypergradient, two.hypergradient, 1e-12)
    alone = forward_hypergradient(smooth.inner, hyper, wrt=("mu", "rho_l2_1"))
    assert set(alone.hypergradient) == {"mu", "rho_l2_1"}
    for name in alone.hypergradient:
        assert float(alone.hypergradient[name]) == pytest.approx(float(one.hypergradient[name]), rel=1e-12)
    reverse_alone = reverse_hypergradient(smooth.inner, hyper, wrt=("eta",))
    assert float(reverse_alone.hypergradient["eta"]) == pytest.approx(float(one.hypergradient["eta"]), rel=1e-10)


def test_per_layer_vectors_equal_scalar_coefficients():
    scalar = smooth_problem()
    vector = classification_problem(scalar.data, steps=8, batch_size=15, seed=0, dtype=F64, model=scalar.model,
                                    vector_penalties=True)
    hyper = nonzero_hyper(scalar)
    as_vectors = {"eta": hyper["eta"], "mu": hyper["mu"],
                  "rho_l1": torch.stack([hyper[f"rho_l1_{k}"] for k in range(3)]),
                  "rho_l2": torch.stack([hyper[f"rho_l2_{k}"] for k in range(3)])}
    want = forward_hypergradient(scalar.inner, hyper).hypergradient
    for mode in ("forward", "reverse"):
        got = hypergradient(vector.inner, as_vectors, mode).hypergradient
        assert got["rho_l2"].shape == (3,)
        for k in range(3):
            assert float(got["rho_l1"][k]) == pytest.approx(float(want[f"rho_l1_{k}"]), rel=1e-10)
            assert float(got["rho_l2"][k]) == pytest.approx(float(want[f"rho_l2_{k}"]), rel=1e-10)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_divergence_is_an_error_naming_the_step_never_a_clipped_number(mode):
    problem = smooth_problem(steps=40, dtype=torch.float32)
    hyper = {name: value.float() for name, value in nonzero_hyper(problem, eta=10.0).items()}
    hyper.update({f"rho_l2_{k}": torch.tensor(10.0) for k in range(3)})  # |1 - 2 eta rho| = 199: w grows 199x a step
    with pytest.raises(NonFiniteError, match=r"non-finite .* at inner step (1[0-9]|2[0-9])\b"):
        hypergradient(problem.inner, hyper, mode)
    with pytest.raises(NonFiniteError, match="hyperparameter eta is not finite"):
        hypergradient(problem.inner, {**hyper, "eta": torch.tensor(float("nan"))}, mode)


def _tagged_sgd_problem(steps: int, poison) -> InnerProblem:
    """Plain SGD on a tanh net whose batches carry their step t, so ``poison(t, w)`` can break exactly one step."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=generator, dtype=F64), torch.randint(0, 3, (40,), generator=generator)
    weights = {"a": 0.3 * torch.randn(5, 4, generator=generator, dtype=F64),
               "b": 0.3 * torch.randn(3, 5, generator=generator, dtype=F64)}

    def loss(w, batch):
        return F.cross_entropy(torch.tanh(batch[0] @ w["a"].T) @ w["b"].T, batch[1])

    def update(w, v, batch, hyper):
        g = torch.func.grad(loss)(w, batch)
        new = {name: poison(batch[2], w[name] - hyper["lr"] * g[name]) for name in w}
        return new, {name: torch.zeros_like(t) for name, t in v.items()}

    return InnerProblem(weights, update, lambda t: (x[t % 4 * 10:][:10], y[t % 4 * 10:][:10], t),
                        lambda w: loss(w, (x, y, -1)), steps)


def test_an_update_whose_velocity_depends_on_nothing_works_in_every_mode():
    """Plain SGD returns fresh zeros as its velocity: no output of reverse mode's vjp may be required to have a graph."""
    problem = _tagged_sgd_problem(6, lambda t, w: w)
    hyper = {"lr": torch.tensor(0.1, dtype=F64)}
    want = float(forward_hypergradient(problem, hyper).hypergradient["lr"])
    assert abs(want) > 1e-3
    for options in ({}, {"checkpoint_every": 4}, {"checkpoint_every": None}):
        got = float(reverse_hypergradient(problem, hyper, **options).hypergradient["lr"])
        assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("mode, options", [("forward", {}), ("reverse", {}), ("reverse", {"checkpoint_every": 7}),
                                           ("reverse", {"checkpoint_every": None})])
def test_the_error_names_the_exact_step_that_went_non_finite(mode, options):
    """Step 12 of 20 overflows (inside the second batch of ten finiteness flags, not at its edge)."""
    problem = _tagged_sgd_problem(20, lambda t, w: w * float("inf") if t == 12 else w)
    run = forward_hypergradient if mode == "forward" else reverse_hypergradient
    with pytest.raises(NonFiniteError, match=r"at inner step 12;"):
        run(problem, {"lr": torch.tensor(0.1, dtype=F64)}, **options)


@pytest.mark.parametrize("options", [{}, {"checkpoint_every": 7}])
def test_a_non_finite_adjoint_names_its_step_in_the_reverse_sweep(options):
    """Step 3's values are finite (0 * sqrt(0)) but its derivative is not: only the sweep back sees it, in its
    last 7 steps (17 = 10 + 7: the sweep's final, partial batch of finiteness flags)."""
    problem = _tagged_sgd_problem(17, lambda t, w: w + 0.0 * torch.sqrt(w - w) if t == 3 else w)
    assert np.isfinite(problem.validation_loss(problem.weights).item())
    with pytest.raises(NonFiniteError, match=r"non-finite adjoint \(reverse sweep\) at inner step 3;"):
        reverse_hypergradient(problem, {"lr": torch.tensor(0.1, dtype=F64)}, **options)


def test_an_outer_jvp_through_the_hypergradient_is_an_error_not_a_silent_zero(smooth):
    hyper = nonzero_hyper(smooth)

    def value(eta):
        return torch.tensor(hypergradient(smooth.inner, {**hyper, "eta": eta}).validation_loss)

    with pytest.raises(SipgradError, match="carries a derivative"):
        torch.func.jvp(value, (hyper["eta"],), (torch.ones((), dtype=F64),))
    with pytest.raises(SipgradError, match="carries a derivative"):
        hypergradient(smooth.inner, {**hyper, "mu": hyper["mu"].clone().requires_grad_()})


def test_bad_arguments_are_clear_errors(smooth):
    hyper = nonzero_hyper(smooth)
    with pytest.raises(SipgradError, match="mode must be"):
        hypergradient(smooth.inner, hyper, "sideways")
    with pytest.raises(SipgradError, match="missing hyperparameter"):
        hypergradient(smooth.inner, {"eta": hyper["eta"]})
    with pytest.raises(SipgradError, match="wrt must name"):
        hypergradient(smooth.inner, hyper, wrt=("nope",))
    with pytest.raises(SipgradError, match="checkpoint_every"):
        reverse_hypergradient(smooth.inner, hyper, checkpoint_every=0)
    with pytest.raises(SipgradError, match="store_activations needs"):
        reverse_hypergradient(smooth.inner, hyper, checkpoint_every=None, store_activations=True)
    with pytest.raises(SipgradError, match="store_activations needs"):
        reverse_hypergradient(smooth.inner, hyper, fused=False, store_activations=True)
    with pytest.raises(SipgradError, match="steps must be"):
        InnerProblem(smooth.inner.weights, smooth.inner.update, smooth.inner.batch, smooth.inner.validation_loss, 0)


def test_hyperparameters_the_update_does_not_read_or_of_the_wrong_shape_are_refused():
    problem = classification_problem(load_digits(), steps=2, batch_size=20, hidden=(8,), vector_penalties=True)
    hyper = seed_hyperparameters(problem.inner, l1=1e-3, l2=1e-3)
    assert tuple(hyper["rho_l1"].shape) == (2,)
    with pytest.raises(SipgradError, match=r"hyperparameter\(s\) weight_decay not read by this update \(it reads "
                                           r"rho_l1, rho_l2, eta, mu\)"):
        hypergradient(problem.inner, {**hyper, "weight_decay": torch.tensor(0.1)})
    with pytest.raises(SipgradError, match=r"rho_l2 must be a vector of 2 .*got shape \(3,\)"):
        hypergradient(problem.inner, {**hyper, "rho_l2": torch.zeros(3)})
    with pytest.raises(SipgradError, match=r"rho_l1 must be a vector of 2 .*got shape \(\)"):
        hypergradient(problem.inner, {**hyper, "rho_l1": torch.tensor(0.0)})
    with pytest.raises(SipgradError, match=r"eta must be a scalar, got shape \(2,\)"):
        hypergradient(problem.inner, {**hyper, "eta": torch.full((2,), 0.01)})
    with pytest.raises(SipgradError, match="index must be an integer of at least 0, got -1"):
        Penalty("l1", "rho_l1", ("0.weight",), -1)


def test_a_custom_update_with_a_fixed_momentum_attribute_is_not_read_as_heavy_balls_layout():
    """Only HeavyBall's `momentum` names a hyperparameter: another update's `momentum = 0.9` is its own constant."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=gen, dtype=F64), torch.randn(6, 2, generator=gen, dtype=F64)

    class FixedMomentumSGD:
        hyperparameters = ("lr",)
        momentum = 0.9

        def __call__(self, w, v, batch, hyper):
            loss = lambda w: ((batch[0] @ w["w"] - batch[1]) ** 2).sum()  # noqa: E731
            g = torch.func.grad(loss)(w)
            new_v = {k: self.momentum * v[k] + g[k] for k in w}
            return {k: w[k] - hyper["lr"] * new_v[k] for k in w}, new_v

    problem = InnerProblem({"w": torch.randn(3, 2, generator=gen, dtype=F64)}, FixedMomentumSGD(),
                           lambda step: (x, y), lambda w: ((x @ w["w"] - y) ** 2).mean(), 3)
    hyper = {"lr": torch.tensor(0.01, dtype=F64)}
    forward = hypergradient(problem, hyper, "forward", fused=False)
    _close(hypergradient(problem, hyper, "reverse", fused=False).hypergradient, forward.hypergradient, 1e-10)
    with pytest.raises(SipgradError, match=r"hyperparameter\(s\) mu not read by this update \(it reads lr\)"):
        hypergradient(problem, {**hyper, "mu": torch.tensor(0.5, dtype=F64)}, "forward", fused=False)


def test_hyperparameters_inside_the_loss_per_example_weights():
    """RFHO's synthetic hyperparameters: weights of the first examples of every mini-batch, in the loss."""
    base = smooth_problem(steps=6)
    inner = base.inner

    def weighted(weights, batch, hyper):
        inputs, labels = batch
        per_example = F.cross_entropy(base.logits(weights, inputs), labels, reduction="none")
        gamma = torch.cat([hyper["gamma"], per_example.new_ones(len(labels) - 4)])
        return (gamma * per_example).mean()

    update = HeavyBall(weighted, inner.update.penalties, loss_hyper=("gamma",))
    problem = InnerProblem(inner.weights, update, inner.batch, inner.validation_loss, inner.steps)
    hyper = {**nonzero_hyper(base), "gamma": torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=F64)}
    fused = forward_hypergradient(problem, hyper)
    generic = forward_hypergradient(problem, hyper, fused=False)
    reverse = reverse_hypergradient(problem, hyper)
    _close(fused.hypergradient, reverse.hypergradient, 1e-9)
    _close(generic.hypergradient, reverse.hypergradient, 1e-9)
    for options in ({"fused": False}, {"store_activations": True}, {"store_activations": True, "checkpoint_every": 4}):
        _close(reverse_hypergradient(problem, hyper, **options).hypergradient, reverse.hypergradient, 1e-9)
    eps = 1e-6
    bump = torch.tensor([0.0, 0.0, eps, 0.0], dtype=F64)
    up = forward_hypergradient(problem, {**hyper, "gamma": hyper["gamma"] + bump}).validation_loss
    down = forward_hypergradient(problem, {**hyper, "gamma": hyper["gamma"] - bump}).validation_loss
    assert float(reverse.hypergradient["gamma"][2]) == pytest.approx((up - down) / (2 * eps), rel=1e-5)
    only_gamma = forward_hypergradient(problem, hyper, wrt=("gamma",))  # eta and mu fixed: no rows for them
    _close(only_gamma.hypergradient, {"gamma": reverse.hypergradient["gamma"]}, 1e-9)


@pytest.mark.parametrize("start, message", [
    ({"eta": 0.0}, "start eta=0.0 must be > 0"),
    ({"mu": 1.0}, "start mu=1.0 must be in [0, 1)"),
    ({"l1": -1e-3}, "start l1=-0.001 must be >= 0"),
    ({"l2": float("nan")}, "start l2=nan is not a finite"),
    ({"eta": 1e39}, "start eta=1e+39 is not a finite float32 number"),  # beyond float32: would start at inf
])
def test_starting_hyperparameters_outside_the_projections_range_are_refused(start, message):
    problem = classification_problem(synthetic_data(), steps=2, batch_size=8, hidden=(4,))
    with pytest.raises(SipgradError, match=re.escape(message)):
        seed_hyperparameters(problem.inner, **start)


def test_a_start_that_fits_float64_but_not_float32_is_kept_in_float64():
    problem = classification_problem(synthetic_data(), steps=2, batch_size=8, hidden=(4,), dtype=torch.float64)
    assert float(seed_hyperparameters(problem.inner, eta=1e39)["eta"]) == 1e39


def test_classification_problem_leaves_the_callers_generator_alone():
    # Its initial weights come from its own seed; the global generator's state is the caller's business.
    data = load_digits()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = classification_problem(data, steps=2, batch_size=20, seed=5, hidden=(8,))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)
    again = classification_problem(data, steps=2, batch_size=20, seed=5, hidden=(8,))
    assert all(torch.equal(first.inner.weights[name], w) for name, w in again.inner.weights.items())


def test_a_loss_torch_cannot_push_tangents_through_is_one_clear_error_in_forward_mode():
    """F.mse_loss's mean reduction fails under jvp of its gradient (pytorch#123996): reverse mode works, and forward
    mode says so instead of a RuntimeError about ZeroTensors; the loss written out works in both."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=gen, dtype=F64), torch.randn(6, 2, generator=gen, dtype=F64)
    start = {"w": torch.randn(3, 2, generator=gen, dtype=F64)}

    def problem(loss) -> InnerProblem:
        return InnerProblem(start, HeavyBall(lambda w, batch: loss(batch[0] @ w["w"], batch[1])),
                            lambda step: (x, y), lambda w: ((x @ w["w"] - y) ** 2).mean(), 3)

    hyper = {"eta": torch.tensor(0.1, dtype=F64), "mu": torch.tensor(0.5, dtype=F64)}
    with pytest.raises(SipgradError, match=r"forward mode cannot .*pytorch#123996.*mode='reverse'"):
        forward_hypergradient(problem(F.mse_loss), hyper)
    written_out = forward_hypergradient(problem(lambda out, target: ((out - target) ** 2).mean()), hyper)
    _close(reverse_hypergradient(problem(F.mse_loss), hyper).hypergradient, written_out.hypergradient, 1e-12)
    with pytest.raises(SipgradError, match=r"through huber_loss_backward: torch has no forward-mode rule"):
        forward_hypergradient(problem(F.huber_loss), hyper)
    # A piecewise-linear loss has a zero Hessian, which vmap hands back as one expanded zero: the fused step's
    # in-place updates used to refuse it.
    for fused in (True, False):
        _close(forward_hypergradient(problem(F.l1_loss), hyper, fused=fused).hypergradient,
               reverse_hypergradient(problem(F.l1_loss), hyper).hypergradient, 1e-12)


def test_batch_norm_is_refused_in_training_mode_and_differentiated_in_eval_mode():
    """In training mode it would update the caller's running statistics at every inner step (and break forward
    mode); in eval mode it is a fixed affine map, and every mode agrees without touching the model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    before = {name: b.clone() for name, b in model.named_buffers()}
    with pytest.raises(SipgradError, match=r"layer 1 \(BatchNorm1d\) is in training mode .*model\.eval\(\)"):
        classification_problem(load_digits(), steps=3, batch_size=20, model=model, dtype=F64)
    problem = classification_problem(load_digits(), steps=3, batch_size=20, model=model.eval(), dtype=F64)
    hyper = seed_hyperparameters(problem.inner, eta=0.1, mu=0.5, l1=1e-3, l2=1e-3)
    reference = forward_hypergradient(problem.inner, hyper)
    for result in (reverse_hypergradient(problem.inner, hyper), reverse_hypergradient(problem.inner, hyper, fused=False),
                   reverse_hypergradient(problem.inner, hyper, checkpoint_every=None)):
        _close(result.hypergradient, reference.hypergradient, 1e-9)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name].to(buffer.dtype)), name


@pytest.mark.parametrize("options, message", [({"steps": 0}, "steps must be a positive integer, got 0"),
                                              ({"steps": 2.5}, "steps must be a positive integer, got 2.5"),
                                              ({"batch_size": True}, "batch size must be a positive integer"),
                                              ({"hidden": (8, 0)}, "hidden layer's width must be a positive integer, got 0")])
def test_classification_problem_refuses_counts_that_are_not_positive_integers(options, message):
    with pytest.raises(SipgradError, match=message):
        classification_problem(load_digits(), **{"steps": 3, "batch_size": 20, "hidden": (8,), **options})


@pytest.mark.parametrize("device, message", [("meta", "holds shapes but no data"), ("banana", "is not a device")])
def test_classification_problem_refuses_a_device_it_cannot_run_on(device, message):
    with pytest.raises(SipgradError, match=message):
        classification_problem(synthetic_data(), steps=2, batch_size=8, hidden=(4,), device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_both_modes_on_cuda_give_the_cpus_hypergradient(dtype, rel):
    """The same start weights, mini-batches and hypergradient on the GPU (a device check: CI has no GPU)."""
    data = load_digits()
    on = {device: classification_problem(data, steps=20, batch_size=50, seed=1, hidden=(24, 24), dtype=dtype,
                                         device=device) for device in ("cpu", "cuda")}
    assert on["cuda"].inner.device.type == "cuda"
    assert all(getattr(on["cuda"].data, part).inputs.is_cuda for part in ("train", "validation", "test"))
    assert all(torch.equal(w, on["cuda"].inner.weights[name].cpu()) for name, w in on["cpu"].inner.weights.items())
    hyper = {device: seed_hyperparameters(problem.inner, l1=1e-4, l2=1e-3) for device, problem in on.items()}
    cpu = forward_hypergradient(on["cpu"].inner, hyper["cpu"]).hypergradient
    for mode in (forward_hypergradient, reverse_hypergradient):
        gpu = mode(on["cuda"].inner, hyper["cuda"]).hypergradient
        for name, value in cpu.items():
            assert gpu[name].device.type == "cuda"
            torch.testing.assert_close(gpu[name].cpu(), value, rtol=rel, atol=rel * float(value.abs().max()))
    test = on["cuda"].data.test
    assert on["cuda"].accuracy(on["cuda"].inner.weights, test) == on["cpu"].accuracy(on["cpu"].inner.weights, test)
