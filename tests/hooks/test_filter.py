"""The vectorised SIP filter against a naive per-sample reference written from the formulas."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.hooks.filter import EPS, filter_gradient


def reference_filter(grad: np.ndarray, keep: np.ndarray, gamma: float, conserve: bool) -> np.ndarray:
    """One sample at a time, in float64, straight from the issue's formulas."""
    out = grad.astype(np.float64).copy()
    for i in range(grad.shape[0]):
        kept, pruned = keep[i], ~keep[i]
        if kept.sum() == 0 or pruned.sum() == 0:
            continue
        sum_k = out[i, kept].sum(axis=0)
        sum_p = out[i, pruned].sum(axis=0)
        if sum_k.size == 1:
            m, n = abs(sum_k.item()) + EPS, abs(sum_p.item()) + EPS
        else:
            m, n = sum_k.var(ddof=1) + EPS, sum_p.var(ddof=1) + EPS
        if math.isinf(gamma):
            out[i, kept] *= math.sqrt((m + n) / m) if conserve else 1.0
            out[i, pruned] = 0.0
        else:
            g = gamma * math.sqrt(n / m)
            b = math.sqrt((m + n) / (m * g * g + n)) if conserve else 1.0
            out[i, kept] *= g * b
            out[i, pruned] *= b
    return out


@st.composite
def gradients(draw):
    batch = draw(st.integers(1, 8))
    channels = draw(st.integers(1, 12))
    side = draw(st.sampled_from([1, 2, 3, 7]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    grad = rng.normal(size=(batch, channels, side, side)) * 10.0 ** rng.uniform(-4, 0)
    mode = draw(st.sampled_from(["random", "none_kept", "all_kept", "mixed"]))
    keep = rng.random((batch, channels)) < 0.4
    if mode == "none_kept":
        keep[:] = False
    elif mode == "all_kept":
        keep[:] = True
    elif mode == "mixed":
        keep[0] = True
    gamma = draw(st.sampled_from([math.inf, 0.5, 1.0, 3.0]))
    conserve = draw(st.booleans())
    return grad.astype(np.float32), keep, gamma, conserve


@settings(max_examples=150, deadline=None)
@given(gradients())
def test_filter_equals_per_sample_reference(case):
    grad, keep, gamma, conserve = case
    ours = filter_gradient(torch.from_numpy(grad), torch.from_numpy(keep), gamma, conserve).double().numpy()
    expected = reference_filter(grad, keep, gamma, conserve)
    scale = np.abs(expected).max() + 1e-30
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-5 * scale)


@settings(max_examples=50, deadline=None)
@given(gradients())
def test_the_filtered_sum_keeps_the_kept_and_pruned_variances_added(case):
    grad, keep, _, _ = case
    if grad.shape[-1] == 1:
        return  # 1 x 1 maps: M and N are |sums|, no variance to conserve (the reference covers their values)
    grad64 = torch.from_numpy(grad).double()
    out = filter_gradient(grad64, torch.from_numpy(keep), math.inf, True)
    kept = grad64 * torch.from_numpy(keep)[:, :, None, None]
    pruned = grad64 - kept
    target = kept.sum(1).flatten(1).var(1) + pruned.sum(1).flatten(1).var(1)  # M + N (eps aside)
    split = torch.from_numpy(keep).any(1) & ~torch.from_numpy(keep).all(1)
    after = out.sum(1).flatten(1).var(1)
    assert torch.allclose(after[split], target[split], rtol=1e-6, atol=1e-10)
    assert torch.equal(out[~split], grad64[~split])


def _correlated(sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two channels over 64 positions, channel 1 = sign * 0.8 * channel 0 + noise; channel 0 kept."""
    torch.manual_seed(0)
    first = torch.randn(64, dtype=torch.float64)
    second = sign * 0.8 * first + 0.3 * torch.randn(64, dtype=torch.float64)
    return torch.stack((first, second)).reshape(1, 2, 8, 8), torch.tensor([[True, False]])


def test_the_unfiltered_sums_variance_is_not_what_is_conserved():
    # docs/sip.md, "What the rescaling conserves": M + N, which misses 2 Cov(kept sum, pruned sum)
    for sign, direction in ((1.0, "below"), (-1.0, "above")):
        grad, keep = _correlated(sign)
        out = filter_gradient(grad, keep, math.inf, True)
        m, n = grad[:, 0].var(), grad[:, 1].var()
        after, unfiltered = out.sum(1).var(), grad.sum(1).var()
        assert torch.allclose(after, m + n, rtol=1e-9)
        cov = torch.cov(grad[0].flatten(1))[0, 1]
        assert torch.allclose(unfiltered, m + n + 2 * cov, rtol=1e-9)
        assert (after < 0.8 * unfiltered) if direction == "below" else (after > 1.25 * unfiltered), direction


def test_finite_gamma_keeps_the_two_rescaled_parts_variances_added():
    grad, keep = _correlated(-1.0)
    for gamma in (0.5, 1.0, 3.0):
        out = filter_gradient(grad, keep, gamma, True)
        parts = out[:, 0].var() + out[:, 1].var()
        assert torch.allclose(parts, grad[:, 0].var() + grad[:, 1].var(), rtol=1e-9), gamma
    # ... while the filtered sum's own variance is far from the unfiltered one's (gamma = 3 here)
    assert out.sum(1).var() > 1.25 * grad.sum(1).var()
