"""Binary layers: sign forward, straight-through backward and forward mode, soft weights, stochastic rounding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.engines.forward.binary import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binarize,
    clip_and_store_latents,
    set_beta,
    stochastic_round,
)
from sipgrad.errors import SipgradError

LATENT = torch.tensor([-1.7, -1.0, -0.4, 0.0, 0.3, 0.999, 1.5], dtype=torch.float64)
INSIDE = (LATENT.abs() <= 1).double()


def test_sign_forward_values():
    assert SignSTE.apply(LATENT).tolist() == [-1, -1, -1, 1, 1, 1, 1]


def test_straight_through_backward_passes_gradient_where_latent_is_in_range():
    latent = LATENT.clone().requires_grad_(True)
    upstream = torch.arange(1.0, 8.0, dtype=torch.float64)
    SignSTE.apply(latent).backward(upstream)
    torch.testing.assert_close(latent.grad, upstream * INSIDE)


def _hardtanh_central_difference(latent, tangent, step=1e-6):
    return (torch.nn.functional.hardtanh(latent + step * tangent)
            - torch.nn.functional.hardtanh(latent - step * tangent)) / (2 * step)


def test_forward_mode_ste_equals_central_differences_of_the_surrogate():
    tangent = torch.tensor([0.5, -2.0, 1.0, 3.0, -1.0, 0.25, 2.0], dtype=torch.float64)
    latent = LATENT.clone()
    latent[1] = -0.9999  # keep finite differences off the surrogate's kinks
    value, derivative = torch.func.jvp(SignSTE.apply, (latent,), (tangent,))
    assert value.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    torch.testing.assert_close(derivative, _hardtanh_central_difference(latent, tangent), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(derivative, tangent * (latent.abs() <= 1))


def test_forward_mode_ste_under_vmap_and_against_backward():
    generator = torch.Generator().manual_seed(0)
    latent = torch.empty(4, 5, dtype=torch.float64).uniform_(-1.5, 1.5, generator=generator)
    tangents = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    weights = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    f = lambda w: (SignSTE.apply(w) * weights).sum()
    derivatives = torch.func.vmap(lambda v: torch.func.jvp(f, (latent,), (v,))[1])(tangents)
    gradient = torch.func.grad(f)(latent)  # backward STE
    torch.testing.assert_close(derivatives, (tangents * gradient).sum(dim=(1, 2)))


def test_soft_weights_are_smooth_and_approach_sign():
    derivative = torch.func.jvp(lambda w: binarize(w, beta=2.0), (LATENT,), (torch.ones_like(LATENT),))[1]
    torch.testing.assert_close(derivative, 2.0 * (1 - torch.tanh(2.0 * LATENT) ** 2))
    nonzero = LATENT[LATENT.abs() > 0.2]
    assert torch.allclose(binarize(nonzero, beta=100.0), torch.sign(nonzero), atol=1e-6)


def test_binary_layers_compute_with_scaled_signs():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3)
    x = torch.randn(2, 6)
    expected = x @ (torch.where(layer.weight >= 0, 1.0, -1.0) / math.sqrt(6)).T + layer.bias
    torch.testing.assert_close(layer(x), expected)
    set_beta(layer, 3.0)
    torch.testing.assert_close(layer(x), x @ (torch.tanh(3.0 * layer.weight) / math.sqrt(6)).T + layer.bias)
    conv = BinaryConv2d(2, 4, 3, padding=1)
    images = torch.randn(1, 2, 5, 5)
    reference = torch.nn.functional.conv2d(images, torch.where(conv.weight >= 0, 1.0, -1.0) / math.sqrt(18),
                                           conv.bias, padding=1)
    torch.testing.assert_close(conv(images), reference)


@settings(max_examples=20, deadline=None)
@given(bits=st.integers(2, 8), value=st.floats(-1.5, 1.5), seed=st.integers(0, 10_000))
def test_stochastic_rounding_is_on_the_grid_and_unbiased(bits, value, seed):
    levels = 2 ** bits - 1
    rounded = stochastic_round(torch.full((20_000,), value, dtype=torch.float64), bits,
                               torch.Generator().manual_seed(seed))
    position = (rounded + 1) * levels / 2
    torch.testing.assert_close(position, position.round(), atol=1e-9, rtol=0)  # on one of 2^b levels
    assert rounded.min() >= -1 and rounded.max() <= 1
    assert len(rounded.unique()) <= 2  # the two neighbouring levels only
    clipped = min(max(value, -1.0), 1.0)
    step = 2 / levels
    assert abs(float(rounded.mean()) - clipped) <= 4 * step / 2 / math.sqrt(20_000) + 1e-12


def test_latents_are_clipped_or_stored_at_b_bits():
    torch.manual_seed(0)
    model = torch.nn.Sequential(BinaryLinear(4, 3))
    with torch.no_grad():
        model[0].weight.mul_(3)
    clip_and_store_latents(model)
    assert model[0].weight.abs().max() <= 1
    clip_and_store_latents(model, bits=5, generator=torch.Generator().manual_seed(0))
    position = (model[0].weight + 1) * 31 / 2
    torch.testing.assert_close(position, position.round(), atol=1e-5, rtol=0)
    with pytest.raises(SipgradError, match="latent bits"):
        stochastic_round(model[0].weight, 0)


def test_forward_mode_ste_passes_at_the_clip_boundary_like_backward():
    """|w| = 1 is where clipped latents sit after every step: forward mode passes the tangent there (1 where
    |w| <= 1), exactly as the backward STE does."""
    latent = torch.tensor([-1.0, 1.0, -1.0 - 1e-12, 1.0 + 1e-12, 0.5], dtype=torch.float64)
    tangent = torch.tensor([2.0, -3.0, 5.0, 7.0, 11.0], dtype=torch.float64)
    derivative = torch.func.jvp(SignSTE.apply, (latent,), (tangent,))[1]
    torch.testing.assert_close(derivative, torch.tensor([2.0, -3.0, 0.0, 0.0, 11.0], dtype=torch.float64))
    upstream = latent.clone().requires_grad_(True)
    SignSTE.apply(upstream).backward(tangent)
    torch.testing.assert_close(derivative, upstream.grad)
