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
def test_variance_of_the_summed_gradient_is_conserved(case):
    grad, keep, _, _ = case
    if grad.shape[-1] == 1:
        return  # 1 x 1 maps conserve |sum|, not a variance
    grad64 = torch.from_numpy(grad).double()
    out = filter_gradient(grad64, torch.from_numpy(keep), math.inf, True)
    kept = grad64 * torch.from_numpy(keep)[:, :, None, None]
    pruned = grad64 - kept
    target = kept.sum(1).flatten(1).var(1) + pruned.sum(1).flatten(1).var(1)  # M + N (eps aside)
    split = torch.from_numpy(keep).any(1) & ~torch.from_numpy(keep).all(1)
    after = out.sum(1).flatten(1).var(1)
    assert torch.allclose(after[split], target[split], rtol=1e-6, atol=1e-10)
    assert torch.equal(out[~split], grad64[~split])
