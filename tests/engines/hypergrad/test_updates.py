"""The inner updates: PyTorch's and RFHO's conventions, penalties, the fused tangent step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vmap

from sipgrad.engines.hypergrad import (
    HeavyBall,
    Penalty,
    layerwise_penalties,
    make_update,
    penalized_parameters,
)
from sipgrad.errors import SipgradError
from tests.engines.hypergrad.conftest import (
    forbid_autograd_gradient,
    nonzero_hyper,
    relu_problem,
    smooth_problem,
)


def _run(problem, hyper, steps):
    w = dict(problem.inner.weights)
    v = {n: torch.zeros_like(t) for n, t in w.items()}
    for t in range(steps):
        w, v = problem.inner.update(w, v, problem.inner.batch(t), hyper)
    return w


def test_torch_convention_is_torch_optim_sgd_with_weight_decay_inside_momentum():
    problem = smooth_problem(steps=6, update="torch")
    names = penalized_parameters(problem.inner.weights)
    hyper = {"eta": torch.tensor(0.2, dtype=torch.float64), "mu": torch.tensor(0.7, dtype=torch.float64)}
    for k in range(len(names)):
        hyper[f"rho_l1_{k}"] = torch.tensor(0.0, dtype=torch.float64)
        hyper[f"rho_l2_{k}"] = torch.tensor(0.05 * (k + 1), dtype=torch.float64)
    ours = _run(problem, hyper, 6)
    model = problem.model
    groups = [{"params": [p], "weight_decay": float(hyper[f"rho_l2_{names.index(n)}"]) if n in names else 0.0}
              for n, p in model.named_parameters()]
    optimizer = torch.optim.SGD(groups, lr=0.2, momentum=0.7)
    for t in range(6):
        inputs, labels = problem.inner.batch(t)  # the t-th scheduled mini-batch, in order
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.detach(), rtol=1e-12, atol=1e-12)


def test_rfho_convention_matches_its_equations():
    problem = smooth_problem(steps=1)
    hyper = nonzero_hyper(problem)
    w0 = problem.inner.weights
    batch = problem.inner.batch(0)
    loss_grad = torch.func.grad(problem.inner.update.loss)(w0, batch)
    names = penalized_parameters(w0)
    v0 = {n: torch.randn_like(t) for n, t in w0.items()}
    w1, v1 = problem.inner.update(w0, v0, batch, hyper)
    for name, w in w0.items():
        g = loss_grad[name]
        if name in names:
            k = names.index(name)
            g = g + hyper[f"rho_l1_{k}"] * torch.sign(w) + 2 * hyper[f"rho_l2_{k}"] * w  # d(rho ||W||^2) = 2 rho W
        v = hyper["mu"] * v0[name] + g
        torch.testing.assert_close(v1[name], v, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(w1[name], w - hyper["eta"] * v, rtol=1e-13, atol=1e-13)


def test_penalties_skip_biases_by_default_and_vector_form_names_entries():
    problem = smooth_problem()
    names = penalized_parameters(problem.inner.weights)
    assert names == ("0.weight", "2.weight", "4.weight")
    scalar = layerwise_penalties(names)
    assert [p.hyper for p in scalar] == [f"rho_l1_{k}" for k in range(3)] + [f"rho_l2_{k}" for k in range(3)]
    vector = layerwise_penalties(names, vector=True)
    assert [(p.hyper, p.index) for p in vector][:2] == [("rho_l1", 0), ("rho_l1", 1)]
    with pytest.raises(SipgradError, match="kind"):
        Penalty("l3", "x", ("a",))
    with pytest.raises(SipgradError, match="unknown inner update"):
        make_update("adam", lambda w, b: 0)


def _perturbed_state(inner, generator):
    """Weights moved off the initial point and a random velocity: a generic (w, v) to differentiate at."""
    w = {n: t + 0.1 * torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in inner.weights.items()}
    v = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in w.items()}
    return w, v


@pytest.mark.parametrize("update", ["rfho", "torch"])
def test_fused_tangent_step_equals_jvp_of_the_update(update):
    problem = smooth_problem(update=update)
    hyper = nonzero_hyper(problem)
    inner = problem.inner
    generator = torch.Generator().manual_seed(3)
    w, v = _perturbed_state(inner, generator)
    names = list(hyper)
    m = len(names)
    zw = {n: torch.randn((m, *t.shape), generator=generator, dtype=t.dtype) for n, t in w.items()}
    zv = {n: torch.randn((m, *t.shape), generator=generator, dtype=t.dtype) for n, t in w.items()}
    basis = {name: torch.eye(m, dtype=torch.float64)[:, i] for i, name in enumerate(names)}
    batch = inner.batch(2)

    def push(a, b, c):
        return jvp(lambda w_, v_, h_: inner.update(w_, v_, batch, h_), (w, v, hyper), (a, b, c))[1]

    want_w, want_v = vmap(push)(zw, zv, basis)
    rows = {name: i for i, name in enumerate(names)}
    clone = lambda z: {n: t.clone() for n, t in z.items()}
    new_w, _, got_w, got_v = inner.update.tangent_step(w, v, batch, hyper, clone(zw), clone(zv), rows)
    plain_w, _ = inner.update(w, v, batch, hyper)
    for n in w:
        torch.testing.assert_close(got_w[n], want_w[n], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_v[n], want_v[n], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_w[n], plain_w[n], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("update", ["rfho", "torch"])
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("products", ["autograd", "written out"])
def test_structured_reverse_step_equals_vjp_of_the_update(update, keep, products, monkeypatch):
    """traced_step is the update; adjoint_step is (p_w', p_v') . d(update)/d(w, v, h), with or without a kept graph.

    "written out": a plain ReLU stack, whose gradient and Hessian-vector product come from ``fused.py``; autograd's
    gradient graph is made unavailable, so the test fails if that path is not the one taken."""
    problem = smooth_problem(update=update) if products == "autograd" else relu_problem(update=update)
    hyper = nonzero_hyper(problem)
    if products == "written out":
        forbid_autograd_gradient(monkeypatch)
    inner = problem.inner
    generator = torch.Generator().manual_seed(5)
    w, v = _perturbed_state(inner, generator)
    pw = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in w.items()}
    pv = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in w.items()}
    batch = inner.batch(3)
    (want_w, want_v), pullback = torch.func.vjp(lambda w_, v_, h_: inner.update(w_, v_, batch, h_), w, v, hyper)
    want_pw, want_pv, want_h = pullback((pw, pv))
    new_w, new_v, graph = inner.update.traced_step(w, v, batch, hyper, tuple(hyper), keep)
    assert (graph is not None) == keep
    got_pw, got_pv, got_h = inner.update.adjoint_step(w, v, new_v, None if keep else batch, hyper, tuple(hyper),
                                                      pw, pv, graph)
    for n in w:
        torch.testing.assert_close(new_w[n], want_w[n], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(new_v[n], want_v[n], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(got_pw[n], want_pw[n], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(got_pv[n], want_pv[n], rtol=1e-12, atol=1e-13)
    assert set(got_h) == set(hyper)
    for name in hyper:
        torch.testing.assert_close(got_h[name], want_h[name], rtol=1e-12, atol=1e-13)


def test_l1_at_zero_uses_autograds_subgradient_zero():
    """At W == 0 exactly, d|W|/dW is taken as 0 (sign(0)), as autograd does for abs."""
    w = {"w": torch.tensor([[0.0, 2.0]], dtype=torch.float64)}
    update = HeavyBall(lambda p, b: (p["w"] * 0).sum(), (Penalty("l1", "rho", ("w",)),))
    hyper = {"rho": torch.tensor(0.5, dtype=torch.float64), "eta": torch.tensor(1.0, dtype=torch.float64),
             "mu": torch.tensor(0.0, dtype=torch.float64)}
    new_w, _ = update(w, {"w": torch.zeros_like(w["w"])}, (), hyper)
    torch.testing.assert_close(new_w["w"], torch.tensor([[0.0, 1.5]], dtype=torch.float64))
    autograd = torch.func.grad(lambda t: t.abs().sum())(w["w"])
    assert autograd[0, 0] == 0.0  # the convention we follow
