"""Direction samplers: unbiased estimators, input-span directions, orthogonal successive sets, the registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.engines.forward.cosine import max_direction_overlap
from sipgrad.engines.forward.estimators import (
    capture_layer_inputs,
    directional_derivatives,
    estimate_gradient,
    loss_function,
    trainable_parameters,
)
from sipgrad.engines.forward.samplers import (
    SAMPLERS,
    OrthonormalSampler,
    flatten_directions,
    make_sampler,
    span_basis,
)
from sipgrad.errors import SipgradError

ALL = ["gaussian", "rademacher", "layerwise", "orthonormal", "activity", "orthogonal", "orthogonal:rademacher"]


def _problem():
    """A float64 two-layer net on 3 examples of 7 features: the first layer's gradient has rank <= 3."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    inputs = torch.randn(3, 7, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    params = trainable_parameters(model)
    loss_of = loss_function(model, F.cross_entropy, inputs, labels)
    true = torch.func.grad(loss_of)(params)
    return model, inputs, params, loss_of, true


def _estimates(sampler, params, loss_of, layer_inputs, steps=2000, count=8, seed=1):
    """``steps`` successive K = ``count`` estimates; all directions go through one vmapped JVP."""
    generator = torch.Generator().manual_seed(seed)
    sets = [sampler.sample(params, count, generator, layer_inputs) for _ in range(steps)]
    directions = {k: torch.cat([d[k] for d in sets]) for k in params}
    _, derivatives = directional_derivatives(loss_of, params, directions)
    contributions = derivatives[:, None] * flatten_directions(directions)
    return contributions.reshape(steps, count, -1).mean(dim=1)


def _z_scores(estimates, true):
    flat_true = flatten_directions({k: v[None] for k, v in true.items()})[0]
    standard_error = estimates.std(dim=0) / math.sqrt(len(estimates))
    return (estimates.mean(dim=0) - flat_true) / standard_error.clamp_min(1e-12)


@pytest.mark.parametrize("name", ALL)
def test_every_sampler_is_unbiased(name):
    model, inputs, params, loss_of, true = _problem()
    sampler = make_sampler(name)
    layer_inputs = capture_layer_inputs(model, inputs) if sampler.needs_layer_inputs else None
    estimates = _estimates(sampler, params, loss_of, layer_inputs)
    z = _z_scores(estimates, true)
    assert z.abs().max() < 4.5, f"{name}: largest z-score {z.abs().max():.2f}"
    assert estimates.std(dim=0).max() > 0  # an estimate, not the gradient itself


def test_the_unbiasedness_check_catches_a_wrong_scale():
    """The orthonormal sampler with a wrong scale is biased; the z-test above must see it."""
    _, _, params, loss_of, true = _problem()

    class Misscaled(OrthonormalSampler):
        def sample(self, params, count, generator=None, layer_inputs=None):
            return {k: v * 0.9 for k, v in super().sample(params, count, generator).items()}

    assert _z_scores(_estimates(Misscaled(), params, loss_of, None), true).abs().max() > 4.5


def test_estimate_gradient_averages_the_directional_derivatives():
    _, _, params, loss_of, true = _problem()
    sampler = make_sampler("gaussian")
    estimate = estimate_gradient(loss_of, params, sampler, 5, torch.Generator().manual_seed(3))
    directions = sampler.sample(params, 5, torch.Generator().manual_seed(3))
    for name, v in directions.items():
        expected_derivatives = torch.stack([sum((true[k] * directions[k][i]).sum() for k in params) for i in range(5)])
        torch.testing.assert_close(estimate.derivatives, expected_derivatives)
        torch.testing.assert_close(estimate.gradient[name],
                                   (expected_derivatives.reshape(5, *(1,) * (v.dim() - 1)) * v).mean(dim=0))


def test_activity_directions_lie_in_the_input_span():
    model, inputs, params, *_ = _problem()
    layer_inputs = capture_layer_inputs(model, inputs)
    assert set(layer_inputs) == {"0.weight", "2.weight"}
    directions = make_sampler("activity").sample(params, 6, torch.Generator().manual_seed(0), layer_inputs)
    first = directions["0.weight"]  # 6 x 5 x 7, rows must be combinations of the 3 inputs
    projector = inputs.T @ torch.linalg.pinv(inputs.T)
    torch.testing.assert_close(first @ projector, first, atol=1e-10, rtol=0)
    assert torch.linalg.matrix_rank(first.reshape(-1, 7)) == 3
    assert directions["0.bias"].shape == (6, 5)  # biases: Gaussian


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 12), dims=st.integers(1, 12), rank=st.integers(1, 12), seed=st.integers(0, 1000))
def test_span_basis_is_an_orthonormal_basis_of_the_rows(rows, dims, rank, seed):
    generator = torch.Generator().manual_seed(seed)
    rank = min(rank, rows, dims)
    left = torch.linalg.qr(torch.randn(rows, rank, generator=generator, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(dims, rank, generator=generator, dtype=torch.float64))[0]
    x = left @ torch.diag(torch.linspace(0.1, 1.0, rank, dtype=torch.float64)) @ right.T  # rank exactly `rank`
    basis = span_basis(x)
    assert basis.shape == (dims, rank)
    torch.testing.assert_close(basis.T @ basis, torch.eye(rank, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(x @ basis @ basis.T, x, atol=1e-8, rtol=1e-8)


def test_successive_orthogonal_sets_are_orthogonal():
    _, _, params, *_ = _problem()
    sampler = make_sampler("orthogonal")
    generator = torch.Generator().manual_seed(0)
    sets = [sampler.sample(params, 5, generator) for _ in range(4)]
    for before, after in itertools.pairwise(sets):
        assert max_direction_overlap(before, after) < 1e-10
    assert max_direction_overlap(sets[0], sets[2]) > 1e-3  # only the previous step's set is avoided
    plain = make_sampler("gaussian")
    assert max_direction_overlap(plain.sample(params, 5, generator), plain.sample(params, 5, generator)) > 1e-3
    sampler.reset()
    assert sampler.previous is None


def test_orthonormal_directions_are_orthogonal_with_norm_sqrt_n():
    _, _, params, *_ = _problem()
    rows = flatten_directions(make_sampler("orthonormal").sample(params, 6, torch.Generator().manual_seed(0)))
    n = rows.shape[1]
    torch.testing.assert_close(rows @ rows.T, n * torch.eye(6, dtype=rows.dtype), atol=1e-9, rtol=0)


def test_layerwise_directions_have_norm_sqrt_n_per_layer_and_rademacher_is_plus_minus_one():
    _, _, params, *_ = _problem()
    generator = torch.Generator().manual_seed(0)
    for name, v in make_sampler("layerwise").sample(params, 3, generator).items():
        torch.testing.assert_close(v.reshape(3, -1).norm(dim=1), torch.full((3,), math.sqrt(params[name].numel()),
                                                                             dtype=v.dtype))
    for v in make_sampler("rademacher").sample(params, 3, generator).values():
        assert set(v.unique().tolist()) == {-1.0, 1.0}


def test_sampling_is_reproducible_from_the_generator():
    _, _, params, *_ = _problem()
    for name in ("gaussian", "rademacher", "layerwise", "orthonormal"):
        first = make_sampler(name).sample(params, 3, torch.Generator().manual_seed(5))
        again = make_sampler(name).sample(params, 3, torch.Generator().manual_seed(5))
        assert all(torch.equal(first[k], again[k]) for k in first)


def test_registry_and_errors():
    assert set(SAMPLERS) == {"gaussian", "rademacher", "layerwise", "orthonormal", "activity", "orthogonal"}
    assert make_sampler("orthogonal:rademacher").name == "orthogonal:rademacher"
    with pytest.raises(SipgradError, match="unknown direction sampler 'nope'"):
        make_sampler("nope")
    with pytest.raises(SipgradError, match="takes no argument"):
        make_sampler("gaussian:3")
    with pytest.raises(SipgradError, match="cannot wrap itself"):
        make_sampler("orthogonal:orthogonal")
    # activity draws in each batch's input span, which moves between steps: projecting out the previous step's
    # directions would bias the estimate (a review measured it with alternating batches)
    with pytest.raises(SipgradError, match="cannot wrap activity: its directions lie in each batch's input span"):
        make_sampler("orthogonal:activity")
    for typo in ("orthogonal:", "gaussian: "):  # not the default base, not a silently odd label
        with pytest.raises(SipgradError, match="nothing after ':'"):
            make_sampler(typo)
    _, _, params, *_ = _problem()
    with pytest.raises(SipgradError, match="directions <= parameters"):
        make_sampler("orthonormal").sample(params, 10_000)


@pytest.mark.parametrize("name", ALL)
def test_every_sampler_is_reproducible_from_its_generator_alone(name):
    """Same seed -> same directions (two successive steps, so the orthogonal state counts), whatever the global
    stream; another seed -> other directions."""
    model, inputs, params, *_ = _problem()
    layer_inputs = capture_layer_inputs(model, inputs) if make_sampler(name).needs_layer_inputs else None

    def draws(seed, global_seed):
        sampler, generator = make_sampler(name), torch.Generator().manual_seed(seed)
        torch.manual_seed(global_seed)
        return [flatten_directions(sampler.sample(params, 3, generator, layer_inputs)) for _ in range(2)]

    first, again, other = draws(5, 0), draws(5, 1), draws(6, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.allclose(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("name", ALL)
def test_the_k_directions_of_one_draw_are_distinct_draws(name):
    """K directions are K draws, not one draw repeated: rank K and no two (anti)parallel."""
    model, inputs, params, *_ = _problem()
    sampler = make_sampler(name)
    layer_inputs = capture_layer_inputs(model, inputs) if sampler.needs_layer_inputs else None
    rows = flatten_directions(sampler.sample(params, 6, torch.Generator().manual_seed(0), layer_inputs)).double()
    assert torch.linalg.matrix_rank(rows) == 6
    unit = rows / rows.norm(dim=1, keepdim=True)
    assert (unit @ unit.T - torch.eye(6, dtype=unit.dtype)).abs().max() < 0.9


@pytest.mark.parametrize("rows", [4, 12])  # fewer rows than columns (Gram of the rows) and more
def test_span_basis_keeps_weak_directions_and_drops_those_below_the_tolerance(rows):
    """Singular values 1, 1e-3, 1e-4 are directions a gradient can lie in (kept, or the activity estimate is
    biased); 1e-8 is below the documented relative tolerance 1e-5 (dropped)."""
    generator = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(rows, 4, generator=generator, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(6, 4, generator=generator, dtype=torch.float64))[0]
    x = left @ torch.diag(torch.tensor([1.0, 1e-3, 1e-4, 1e-8], dtype=torch.float64)) @ right.T
    basis = span_basis(x)
    assert basis.shape == (6, 3)
    torch.testing.assert_close(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    kept = right[:, :3]
    torch.testing.assert_close(basis @ (basis.T @ kept), kept, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_a_one_direction_estimate_is_the_signed_derivative_times_the_direction(seed):
    """K = 1 (the general path's own branch): g = (grad . v) v, with the derivative's sign."""
    _, _, params, loss_of, true = _problem()
    estimate = estimate_gradient(loss_of, params, make_sampler("gaussian"), 1, torch.Generator().manual_seed(seed))
    v = make_sampler("gaussian").sample(params, 1, torch.Generator().manual_seed(seed))
    d = sum((true[k] * v[k][0]).sum() for k in params)
    torch.testing.assert_close(estimate.derivatives, d.reshape(1))
    for name in params:
        torch.testing.assert_close(estimate.gradient[name], d * v[name][0])
