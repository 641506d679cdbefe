"""The hand-written forward-over-reverse step for plain stacks (hypergrad/fused.py) against the general path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sipgrad.datasets import load_digits
from sipgrad.engines.hypergrad import (
    classification_problem,
    forward_hypergradient,
    reverse_hypergradient,
    seed_hyperparameters,
)
from sipgrad.engines.hypergrad.fused import (
    Workspace,
    gradient_and_hvps,
    plan_for,
    primal_pass,
)
from sipgrad.engines.hypergrad.modes import _FiniteWatch
from sipgrad.engines.hypergrad.problem import mlp
from sipgrad.errors import SipgradError
from tests.engines.hypergrad.conftest import (
    forbid_autograd_gradient,
    nonzero_hyper,
    odd_stack,
    relu_problem,
    synthetic_data,
)

F64 = torch.float64


def general(inner):
    """The same problem with the fused plan removed: forward mode's vmapped jvp of grad."""
    return dataclasses.replace(inner, update=dataclasses.replace(inner.update, network=None))


def _close(a: dict, b: dict, rel: float, may_be_zero: tuple[str, ...] = ()) -> None:
    """a == b to ``rel`` of b's largest entry; every hypergradient of b must be nonzero (else the comparison is
    vacuous: a ReLU stack with a trailing ReLU dies at a large learning rate and gives 0 == 0)."""
    for name, value in a.items():
        scale = float(b[name].abs().max())
        assert scale > 1e-6 or name in may_be_zero, (name, "a zero hypergradient compares nothing")
        assert float((value - b[name]).abs().max()) <= rel * max(scale, 1e-12), (name, value, b[name])


def test_plain_stacks_are_recognised_and_anything_else_is_left_to_the_general_path():
    plan = plan_for(odd_stack())
    assert plan is not None
    assert [op.kind for op in plan.ops] == ["flatten", "linear", "relu", "linear", "linear", "relu", "linear", "relu"]
    assert plan.ops[1].bias is None and plan.ops[3].bias == "4.bias"
    assert relu_problem().inner.update.network == plan

    assert plan_for(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))) is None

    class MyLinear(nn.Linear):
        pass
    assert plan_for(nn.Sequential(MyLinear(3, 2))) is None  # a subclass may change forward
    assert plan_for(nn.Sequential(nn.Flatten(0), nn.Linear(3, 2))) is None
    shared = nn.Linear(3, 3)
    assert plan_for(nn.Sequential(shared, nn.ReLU(), shared)) is None
    frozen = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    frozen[0].weight.requires_grad_(False)
    assert plan_for(frozen) is None
    hooked = nn.Sequential(nn.Linear(3, 2))
    hooked[0].register_forward_hook(lambda module, args, out: 2 * out)
    assert plan_for(hooked) is None
    assert plan_for(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))) is None  # buffers
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    try:
        assert plan_for(nn.Sequential(nn.Linear(3, 2))) is None  # a global hook may change any module's output
    finally:
        handle.remove()
    assert plan_for(nn.Sequential(nn.Linear(3, 2))) is not None


def test_gradient_and_products_equal_vmapped_jvp_of_grad_in_float64_with_a_relu_at_zero():
    problem = relu_problem()
    update, inner = problem.inner.update, problem.inner
    inputs, labels = inner.batch(0)
    inputs = inputs.clone()
    inputs[0] = 0.0  # the bias-free first layer gives z == 0 exactly: ReLU's derivative there is 0 in both
    generator = torch.Generator().manual_seed(3)
    m = 5
    directions = {n: torch.randn(m, *w.shape, generator=generator, dtype=F64) for n, w in inner.weights.items()}
    gradient, hvp = gradient_and_hvps(update.network, inner.weights, directions, (inputs, labels))
    want_gradient, want_hvp = update._hvp_batch(inner.weights, directions, {}, {}, (inputs, labels))
    assert set(hvp) == set(want_hvp) == set(inner.weights)
    for name in inner.weights:
        assert hvp[name].shape == (m, *inner.weights[name].shape)
        torch.testing.assert_close(gradient[name], want_gradient[name], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(hvp[name], want_hvp[name], rtol=1e-10, atol=1e-13)
        assert float(hvp[name].abs().max()) > 1e-6, name  # every parameter's product is exercised
    # linear in the directions: the m products are m independent Hessian-vector products
    single = {n: d[2:3] for n, d in directions.items()}
    _, one = gradient_and_hvps(update.network, inner.weights, single, (inputs, labels))
    for name in inner.weights:
        torch.testing.assert_close(one[name][0], hvp[name][2], rtol=1e-10, atol=1e-13)



@pytest.mark.parametrize("model", ["odd stack", "two hidden layers of one width"])
def test_one_workspace_across_calls_gives_the_products_of_fresh_memory_and_never_holds_a_result(model):
    """A forward run reuses one Workspace at every step: the products must be those of a fresh call whatever the
    workspace held (other directions, batches, weights, m, dtype), a result handed out must stay as it was through
    later calls, and the same shapes must reuse the same storage (the point of it: no memory faulted in again)."""
    problem = relu_problem(model=None if model == "odd stack" else mlp(6, (7, 7), 3))  # like 300-300: same shapes
    inner, plan = problem.inner, problem.inner.update.network
    generator = torch.Generator().manual_seed(11)
    workspace = Workspace()
    calls = []
    for step, m, dtype in [(0, 4, F64), (1, 4, F64), (2, 3, F64), (3, 4, torch.float32), (4, 4, F64)]:
        weights = {n: (w + 0.05 * torch.randn(w.shape, generator=generator, dtype=F64)).to(dtype)
                   for n, w in inner.weights.items()}
        directions = {n: torch.randn(m, *w.shape, generator=generator, dtype=F64).to(dtype)
                      for n, w in inner.weights.items()}
        inputs, labels = inner.batch(step)
        batch = (inputs.to(dtype), labels)
        _, fresh = gradient_and_hvps(plan, weights, directions, batch)
        _, reused = gradient_and_hvps(plan, weights, directions, batch, workspace)
        calls.append((fresh, reused, {n: t.clone() for n, t in reused.items()}))
    scratch = {t.untyped_storage().data_ptr() for t in workspace._tensors.values()}
    for fresh, reused, copied in calls:
        for name, product in fresh.items():
            torch.testing.assert_close(reused[name], product, rtol=1e-12 if product.dtype == F64 else 1e-6, atol=0)
            torch.testing.assert_close(reused[name], copied[name], rtol=0, atol=0)  # later calls left it alone
            assert reused[name].untyped_storage().data_ptr() not in scratch
    before = {key: t.untyped_storage().data_ptr() for key, t in workspace._tensors.items()}
    gradient_and_hvps(plan, weights, directions, batch, workspace)
    assert before and {key: t.untyped_storage().data_ptr() for key, t in workspace._tensors.items()} == before

@pytest.mark.parametrize("update", ["rfho", "torch"])
def test_fused_forward_hypergradient_equals_the_general_forward_mode_in_float64(update):
    problem = relu_problem(steps=7, update=update)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)  # small enough that no ReLU layer dies
    fused = forward_hypergradient(problem.inner, hyper)
    plain = forward_hypergradient(general(problem.inner), hyper)
    assert set(fused.hypergradient) == set(hyper)
    _close(fused.hypergradient, plain.hypergradient, 1e-10)
    for name in problem.inner.weights:
        torch.testing.assert_close(fused.weights[name], plain.weights[name], rtol=1e-12, atol=1e-14)
    reverse = reverse_hypergradient(problem.inner, hyper, store_activations=True)
    _close(fused.hypergradient, reverse.hypergradient, 1e-9)
    # a subset of the hyperparameters: the fixed ones have no tangent row
    wrt = ("rho_l2_1", "mu")
    _close(forward_hypergradient(problem.inner, hyper, wrt).hypergradient,
           forward_hypergradient(general(problem.inner), hyper, wrt).hypergradient, 1e-10)


@pytest.mark.parametrize(("every", "activations"), [(1, False), (1, True), (3, False), (3, True)])
def test_written_out_reverse_modes_equal_the_autograd_ones(every, activations, monkeypatch):
    """Whole reverse hypergradients, hand-written against autograd's products, to 1e-10 in float64; the hand-written
    activations keep no more memory than autograd's graph of the same steps."""
    problem = relu_problem(steps=7)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)  # small enough that no ReLU layer dies
    autograd = reverse_hypergradient(general(problem.inner), hyper, checkpoint_every=every,
                                     store_activations=activations)
    forbid_autograd_gradient(monkeypatch)
    written = reverse_hypergradient(problem.inner, hyper, checkpoint_every=every, store_activations=activations)
    _close(written.hypergradient, autograd.hypergradient, 1e-10)
    assert written.state_mib <= autograd.state_mib
    if activations:  # counted, not forgotten: within 10% of what autograd's graph keeps above the trajectory
        trajectory = reverse_hypergradient(problem.inner, hyper, checkpoint_every=every).state_mib
        assert written.state_mib - trajectory >= 0.9 * (autograd.state_mib - trajectory) > 0
    else:
        assert written.state_mib == autograd.state_mib  # the trajectory: the same copies of the state


def test_the_seed_shaped_mlp_every_layer_with_a_bias_matches_autograd_in_both_modes(monkeypatch):
    """RFHO's kind of network (Linear-ReLU-Linear-ReLU-Linear, biases everywhere, including the first layer, whose
    bias tangent is the only tangent below the first product): both modes, hand-written against autograd."""
    problem = relu_problem(model=mlp(6, (7, 5), 3), steps=6)
    hyper = nonzero_hyper(problem, eta=0.05, mu=0.6)
    want = forward_hypergradient(general(problem.inner), hyper).hypergradient
    reverse_want = reverse_hypergradient(general(problem.inner), hyper).hypergradient
    _close(reverse_want, want, 1e-10)
    forbid_autograd_gradient(monkeypatch)
    _close(forward_hypergradient(problem.inner, hyper).hypergradient, want, 1e-10)
    for options in ({}, {"store_activations": True}, {"checkpoint_every": 4, "store_activations": True}):
        _close(reverse_hypergradient(problem.inner, hyper, **options).hypergradient, want, 1e-10)


def test_primal_pass_is_autograds_gradient_and_its_rebuild_skips_the_weight_gradient():
    problem = relu_problem()
    inner = problem.inner
    batch = inner.batch(1)
    gradient, kept = primal_pass(inner.update.network, inner.weights, batch, keep=True)
    want = torch.func.grad(inner.update.loss)(inner.weights, batch)
    assert set(gradient) == set(want)
    for name in want:
        torch.testing.assert_close(gradient[name], want[name], rtol=1e-12, atol=1e-14)
    rebuilt_gradient, rebuilt = primal_pass(inner.update.network, inner.weights, batch, weight_gradient=False,
                                            keep=True)
    assert rebuilt_gradient == {}
    assert sorted(rebuilt.errors) == sorted(kept.errors)
    for index, error in kept.errors.items():
        torch.testing.assert_close(rebuilt.errors[index], error, rtol=0, atol=0)
    assert primal_pass(inner.update.network, inner.weights, batch)[1] is None


def test_l1_kink_sign_of_zero_is_zero_and_has_no_derivative():
    """One step from weights with exact zeros: w_1 = w_0 - eta (g + rho sign(w_0)), sign(0) = 0, so
    dE/d rho_l1 = -eta <dE/dw_1, sign(w_0)> gets nothing from the zero entries."""
    model = odd_stack(seed=1)
    with torch.no_grad():
        model[1].weight[:, :3] = 0.0
        model[4].weight[0] = 0.0
    problem = relu_problem(model=model, steps=1)
    inner = problem.inner
    hyper = nonzero_hyper(problem, eta=0.3, mu=0.6)
    fused = forward_hypergradient(inner, hyper)
    one_step = ("mu",)  # v_0 = 0: after one step the momentum has had nothing to act on
    _close(fused.hypergradient, forward_hypergradient(general(inner), hyper).hypergradient, 1e-10, one_step)
    # The update through jvp (``_apply``, autograd's sign) is the reference for the in-place state step
    # (``_apply_fused``) that both modes share: a sign(0) of +1 there would move the zero entries.
    through_jvp = forward_hypergradient(inner, hyper, fused=False)
    for name, w in through_jvp.weights.items():
        torch.testing.assert_close(fused.weights[name], w, rtol=1e-13, atol=1e-15)
    _close(fused.hypergradient, through_jvp.hypergradient, 1e-10, one_step)
    _close(fused.hypergradient, reverse_hypergradient(inner, hyper).hypergradient, 1e-10, one_step)
    with torch.enable_grad():
        leaves = {n: w.detach().requires_grad_() for n, w in fused.weights.items()}
        grads = dict(zip(leaves, torch.autograd.grad(inner.validation_loss(leaves), list(leaves.values()))))
    penalised = [n for n in inner.weights if inner.weights[n].dim() >= 2]
    for k, name in enumerate(penalised):
        want = -hyper["eta"] * torch.vdot(grads[name].reshape(-1), torch.sign(inner.weights[name]).reshape(-1))
        assert abs(float(fused.hypergradient[f"rho_l1_{k}"] - want)) <= 1e-12 * max(1.0, abs(float(want)))
        # the zero entries would have counted with sign(0) = +1 or -1
        plus_one = -hyper["eta"] * grads[name][inner.weights[name] == 0].sum()
        if float(plus_one.abs()) > 1e-8:
            assert abs(float(fused.hypergradient[f"rho_l1_{k}"] - want - plus_one)) > 1e-9


def test_float32_fused_forward_and_reverse_agree_to_1e_4_at_t_100_on_digits():
    problem = classification_problem(load_digits(), steps=100, batch_size=50, seed=0, hidden=(32, 32))
    assert problem.inner.update.network is not None
    hyper = seed_hyperparameters(problem.inner, eta=0.05, mu=0.5, l1=1e-4, l2=1e-3)
    forward = forward_hypergradient(problem.inner, hyper)
    reverse = reverse_hypergradient(problem.inner, hyper, store_activations=True)
    _close(forward.hypergradient, reverse.hypergradient, 1e-4)
    assert float(forward.hypergradient["eta"]) < 0
    # Both modes step the state by the same code on the same gradient: the same weights to the last bit.
    for name, weight in reverse.weights.items():
        assert torch.equal(forward.weights[name], weight), name


def test_the_fused_path_is_skipped_where_it_does_not_apply():
    """Batches whose labels are not int64 class indices, other parameters, or a Linear on N-d inputs take the
    general path."""
    problem = relu_problem(steps=2)
    inner = problem.inner
    network = inner.update.network
    inputs, labels = inner.batch(0)
    assert network.applies(inner.weights, (inputs, labels))
    assert not network.applies(inner.weights, (inputs, torch.zeros(len(labels), 3)))  # soft labels
    assert not network.applies(inner.weights, (inputs, labels.to(torch.uint8)))  # would index as a boolean mask
    assert not network.applies({"x": torch.zeros(1)}, (inputs, labels))
    no_flatten = plan_for(nn.Sequential(nn.Linear(6, 4), nn.Flatten(), nn.Linear(4, 3)))
    weights = dict(nn.Sequential(nn.Linear(6, 4), nn.Flatten(), nn.Linear(4, 3)).named_parameters())
    assert no_flatten.applies(weights, (torch.zeros(5, 6), labels[:5]))
    assert not no_flatten.applies(weights, (torch.zeros(5, 1, 1, 6), labels[:5]))


def test_uint8_labels_give_the_int64_hypergradient():
    """A data set with uint8 labels: the problem indexes with int64 (the hand-written pass would read uint8 as a mask,
    and forward mode's gather refuses it)."""
    problem = relu_problem(steps=4)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)
    data = synthetic_data()
    byte_labels = dataclasses.replace(data.train, labels=data.train.labels.to(torch.uint8))
    byte_problem = classification_problem(dataclasses.replace(data, train=byte_labels), steps=4, batch_size=15,
                                          model=odd_stack(), dtype=F64)
    want = reverse_hypergradient(problem.inner, hyper).hypergradient
    for mode in (forward_hypergradient, reverse_hypergradient):
        _close(mode(byte_problem.inner, hyper).hypergradient, want, 1e-10)


def test_a_loss_that_reads_hyperparameters_never_takes_the_written_out_pass():
    """The hand-written pass is the plain network's loss: with per-example loss weights (loss_hyper) on the same
    recognised network, both modes must differentiate the weighted loss (the general path), not the plain one."""
    problem = relu_problem(steps=5)
    inner = problem.inner

    def weighted(weights, batch, hyper):
        inputs, labels = batch
        per_example = torch.nn.functional.cross_entropy(problem.logits(weights, inputs), labels, reduction="none")
        return (torch.cat([hyper["gamma"], per_example.new_ones(len(labels) - 3)]) * per_example).mean()

    update = dataclasses.replace(inner.update, loss=weighted, loss_hyper=("gamma",))
    assert update.network is not None
    weighted_problem = dataclasses.replace(inner, update=update)
    hyper = {**nonzero_hyper(problem, eta=0.02, mu=0.6), "gamma": torch.tensor([3.0, 0.2, 2.0], dtype=F64)}
    want = forward_hypergradient(general(weighted_problem), hyper).hypergradient
    assert float(want["gamma"].abs().min()) > 1e-8
    _close(forward_hypergradient(weighted_problem, hyper).hypergradient, want, 1e-10)
    for options in ({}, {"store_activations": True}):
        _close(reverse_hypergradient(weighted_problem, hyper, **options).hypergradient, want, 1e-10)


@pytest.mark.parametrize(("part", "bad", "message"), [("train", -100, r"lie in 0\.\.2; found -100\.\.2"),
                                                      ("validation", 3, r"lie in 0\.\.2; found \d\.\.3"),
                                                      ("test", None, "integer class indices")])
def test_labels_that_are_not_class_indices_are_refused_before_any_pass_indexes_by_them(part, bad, message):
    """A label of -100 (cross-entropy's ignore_index) would make the hand-written pass subtract 1 from the last
    class's probability: the problem refuses it, naming the split."""
    data = synthetic_data()
    split = getattr(data, part)
    labels = split.labels.float() if bad is None else split.labels.clone()
    if bad is not None:
        labels[4] = bad
    data = dataclasses.replace(data, **{part: dataclasses.replace(split, labels=labels)})
    with pytest.raises(SipgradError, match=f"synthetic {part} labels must .*{message}"):
        classification_problem(data, steps=2, batch_size=15, model=odd_stack())


def test_finiteness_watch_catches_nan_and_both_infinities_anywhere():
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float32, F64):
            for position in (0, 17, 4095, 8191):
                tensor = torch.ones(8, 1024, dtype=dtype)
                tensor.view(-1)[position] = bad
                watch = _FiniteWatch("tangent")
                watch.add(3, [torch.zeros(5, dtype=dtype), tensor])
                with pytest.raises(SipgradError, match="non-finite tangent at inner step 3"):
                    watch.check()
    watch = _FiniteWatch("tangent")
    watch.add(0, [torch.zeros(0), torch.full((9,), 3e38)])
    watch.check()


def test_checkpointed_activations_rebuild_each_segments_last_step_without_its_weight_gradient(monkeypatch):
    """Every 3 of 9 steps with activations: the forward sweep takes 9 gradients; each of the 3 segments runs its
    first 2 steps again with their gradients (the next state needs them) and rebuilds its last step's pass alone,
    without the weight gradient: 9 + 3 x 2 full passes and 3 rebuilds, and the same hypergradient as autograd."""
    import sipgrad.engines.hypergrad.updates as updates

    problem = relu_problem(steps=9)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)
    want = reverse_hypergradient(general(problem.inner), hyper).hypergradient
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("weight_gradient", True))
        return primal_pass(*args, **kwargs)
    monkeypatch.setattr(updates, "primal_pass", counted)
    got = reverse_hypergradient(problem.inner, hyper, checkpoint_every=3, store_activations=True).hypergradient
    _close(got, want, 1e-10)
    assert (calls.count(True), calls.count(False)) == (9 + 3 * 2, 3)


def test_weights_that_require_grad_give_the_hypergradients_of_plain_ones():
    """A hand-built problem may start from ``dict(model.named_parameters())``: the written-out products (in place,
    into kept buffers) must not trip over autograd, in either mode, and must give the same numbers."""
    problem = relu_problem(steps=5)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)
    tracked = dataclasses.replace(problem.inner, weights={n: w.clone().requires_grad_()
                                                          for n, w in problem.inner.weights.items()})
    for run in (lambda inner: forward_hypergradient(inner, hyper),
                lambda inner: reverse_hypergradient(inner, hyper, checkpoint_every=2, store_activations=True),
                lambda inner: reverse_hypergradient(inner, hyper)):
        _close(run(tracked).hypergradient, run(problem.inner).hypergradient, 1e-12)


def test_a_forward_run_keeps_one_workspace_for_all_its_steps(monkeypatch):
    """The point of the workspace is that its buffers outlive a step: one per run, not one per step."""
    import sipgrad.engines.hypergrad.fused as fused_module

    made = []
    original = fused_module.Workspace.__init__

    def counted(self):
        made.append(self)
        original(self)
    monkeypatch.setattr(fused_module.Workspace, "__init__", counted)
    problem = relu_problem(steps=6)
    forward_hypergradient(problem.inner, nonzero_hyper(problem, eta=0.02, mu=0.6))
    assert len(made) == 1 and made[0]._tensors  # and it was used


def test_written_out_hypergradients_do_not_depend_on_the_thread_count():
    """Forward (m directions in one product) and both stored reverse modes on the hand-written path, 1 thread
    against 2, on hidden layers wide enough that the products are split between threads."""
    problem = relu_problem(model=mlp(6, (160, 160), 3), steps=4)
    hyper = nonzero_hyper(problem, eta=0.02, mu=0.6)
    runs = {"forward": lambda: forward_hypergradient(problem.inner, hyper),
            "trajectory": lambda: reverse_hypergradient(problem.inner, hyper),
            "activations": lambda: reverse_hypergradient(problem.inner, hyper, store_activations=True)}
    before = torch.get_num_threads()
    try:
        got = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got[threads] = {name: run().hypergradient for name, run in runs.items()}
    finally:
        torch.set_num_threads(before)
    for name in runs:
        _close(got[2][name], got[1][name], 1e-12)
    _close(got[1]["trajectory"], got[1]["forward"], 1e-9)
