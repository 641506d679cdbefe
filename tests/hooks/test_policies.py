"""The SIP filter registry: one share convention, the p-value convention (pinned), the pca:K rank
filter, and configs that refuse bad values when constructed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad import MethodOptions, SIPConfig, SipgradError
from sipgrad.calibration.stats import LayerStatistics, SIPStatistics
from sipgrad.evaluation.evaluator import EvalSettings
from sipgrad.hooks.policies import (POLICIES, ClassPolicy, ContributionPolicy, InstancePolicy, LowRankFilter,
                                    channel_count)


def test_one_share_convention_floor_with_at_least_one():
    assert channel_count(0.25, 24) == 6
    assert channel_count(0.3, 24) == 7  # 7.2 -> 7 (the reference's int(q * C))
    assert channel_count(0.3, 10) == 3  # 0.3 * 10 is 2.9999999999999996 in floating point
    assert channel_count(0.01, 24) == 1
    assert channel_count(1.0, 24) == 24
    scores = torch.arange(24.0)[None]
    assert ContributionPolicy(0.3).keep_mask("x", torch.ones(1, 24, 1, 1), scores[..., None, None], None).sum() == 7


def _statistics(mean, std, shapiro=None, class_pvalues=None) -> SIPStatistics:
    c = len(mean)
    layer = LayerStatistics(np.asarray(mean, float), np.asarray(std, float),
                            np.zeros(c) if shapiro is None else np.asarray(shapiro, float),
                            np.zeros((c, 2)) if class_pvalues is None else np.asarray(class_pvalues, float), 10)
    return SIPStatistics("m", ("x",), "f", {"x": layer}, 2)


def test_ins_keeps_exactly_the_quantile_share_with_less_or_equal():
    # 8 live channels with distinct p-values: quantile 0.5 keeps exactly 4 (the reference's `<` kept 3).
    stats = _statistics(mean=np.zeros(8), std=np.ones(8))
    gap = torch.linspace(0.1, 0.8, 8)[None]  # higher activation -> smaller p
    activation = gap[..., None, None].expand(1, 8, 2, 2)
    keep = InstancePolicy(stats, quantile=0.5, shapiro_threshold=None).keep_mask("x", activation, torch.zeros_like(activation), None)
    assert keep[0].tolist() == [False] * 4 + [True] * 4


def test_dead_channels_are_never_kept_and_never_shift_the_cut():
    # channels 0-3 dead (std 0, activation at their mean 0): p = NaN; 4-7 live, with p > 0.5 (below
    # their mean), so ranking dead channels anywhere but last would move the cut.
    stats = _statistics(mean=[0, 0, 0, 0, 1, 1, 1, 1], std=[0, 0, 0, 0, 1, 1, 1, 1])
    gap = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.4, 0.3, 0.2, 0.1]])
    activation = gap[..., None, None].expand(1, 8, 2, 2)
    keep = InstancePolicy(stats, quantile=0.25, shapiro_threshold=None).keep_mask("x", activation, torch.zeros_like(activation), None)
    assert keep[0].tolist() == [False] * 4 + [True, True, False, False]  # 2 of 8: the two smallest live p
    # a dead channel that turns active (gap > mean with std 0) is infinitely unusual: p = 0, kept first
    gap[0, 0] = 0.5
    activation = gap[..., None, None].expand(1, 8, 2, 2)
    keep = InstancePolicy(stats, quantile=0.125, shapiro_threshold=None).keep_mask(
        "x", activation, torch.zeros_like(activation), None)
    assert keep[0].tolist() == [True] + [False] * 7
    # NaN class p-values (a class with too few calibration images) are never kept either
    cls_stats = _statistics(mean=np.zeros(4), std=np.ones(4),
                            class_pvalues=[[0.01, np.nan], [0.02, np.nan], [0.5, np.nan], [np.nan, np.nan]])
    cls_stats._torch_cache.clear()
    keep = ClassPolicy(cls_stats, alpha=0.05, shapiro_threshold=None).keep_mask(
        "x", None, torch.zeros(1, 4, 1, 1), torch.tensor([0]))
    assert keep[0].tolist() == [True, True, False, False]


def _gapped(batch: int, channels: int, positions: int, seed: int = 0) -> torch.Tensor:
    """Matrices with singular values 1, 1/2, 1/4, ...: every top-k subspace is well defined."""
    generator = torch.Generator().manual_seed(seed)
    r = min(channels, positions)
    u = torch.linalg.qr(torch.randn(batch, channels, r, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(batch, positions, r, generator=generator, dtype=torch.float64))[0]
    return (u * 2.0 ** -torch.arange(r, dtype=torch.float64)) @ v.transpose(1, 2)


def _numpy_truncation(matrix: torch.Tensor, rank: int) -> np.ndarray:
    u, s, vh = np.linalg.svd(matrix.double().cpu().numpy(), full_matrices=False)
    return (u[..., :rank] * s[..., None, :rank]) @ vh[..., :rank, :]


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), channels=st.integers(2, 9), side=st.integers(1, 5), rank=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_rank_filter_equals_a_truncated_svd_of_each_samples_gradient(batch, channels, side, rank, seed):
    grad = _gapped(batch, channels, side * side, seed).reshape(batch, channels, side, side)
    ours = LowRankFilter(rank, variance_conservation=False).apply("x", None, grad, None)
    want = _numpy_truncation(grad.reshape(batch, channels, -1), min(rank, channels, side * side))
    assert np.allclose(ours.reshape(batch, channels, -1).numpy(), want, atol=1e-10)


@pytest.mark.parametrize("channels, positions", [(12, 5), (5, 12)])  # tall (C >= HW) and wide
def test_the_gpu_route_orients_each_matrix_and_keeps_its_top_subspace(monkeypatch, channels, positions):
    """``_truncate_rank_cuda``'s orientation and slicing, run on the CPU with a driver-less SVD in its place."""
    from sipgrad.hooks import policies

    cpu_svd = torch.linalg.svd

    def gesvda_on_the_cpu(a, full_matrices, driver):
        assert driver == "gesvda" and a.shape[-2] >= a.shape[-1], "gesvda takes tall matrices only"
        return cpu_svd(a, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", gesvda_on_the_cpu)
    matrix = _gapped(3, channels, positions)
    assert np.allclose(policies._truncate_rank_cuda(matrix, 2).numpy(), _numpy_truncation(matrix, 2), atol=1e-12)


def test_the_gpu_route_falls_back_to_eigh_when_the_svd_reports_a_failure(monkeypatch):
    from sipgrad.hooks import policies

    def failing(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", failing)
    for shape in ((2, 9, 4), (2, 4, 9)):
        matrix = _gapped(*shape, seed=1)
        assert np.allclose(policies._truncate_rank_cuda(matrix, 3).numpy(), _numpy_truncation(matrix, 3), atol=1e-12)


def test_the_gpu_route_falls_back_to_eigh_when_the_svd_returns_nan_unreported(monkeypatch):
    """gesvda has returned NaN vectors for a square zero matrix without reporting a failure (pytorch#136085)."""
    import warnings

    from sipgrad.hooks import policies

    cpu_svd = torch.linalg.svd

    def nan_vectors(a, full_matrices, driver):
        warnings.warn("torch.linalg.svd: It is recommended to redo this SVD with another driver.", UserWarning)
        u, s, vh = cpu_svd(a, full_matrices=full_matrices)
        return u, s, vh.clone().index_fill_(0, torch.tensor([0]), math.nan)  # the first sample's vectors

    monkeypatch.setattr(torch.linalg, "svd", nan_vectors)
    matrix = _gapped(2, 7, 7, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the advice to redo the SVD is not passed on: it has been redone
        got = policies._truncate_rank_cuda(matrix, 2)
    assert np.allclose(got.numpy(), _numpy_truncation(matrix, 2), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels, positions, dtype, rank", [
    (480, 196, torch.float32, 8), (1152, 49, torch.float32, 8),  # Lite0's shapes
    (64, 196, torch.float32, 8),  # wide
    (49, 49, torch.float32, 8), (196, 196, torch.float32, 8), (3, 3, torch.float32, 2),  # square
    (480, 196, torch.float64, 8),
])
def test_the_rank_filter_on_cuda_matches_float64_svd(channels, positions, dtype, rank):
    """A device check (CI has no GPU): cuSOLVER's batched gesvda route against numpy's float64 SVD."""
    from sipgrad.hooks.policies import truncate_rank

    matrix = _gapped(4, channels, positions, seed=2)
    matrix[1] = 0  # a layer whose gradient is zero for one sample (gesvda: NaN for a square zero matrix)
    matrix[2, :, 2:] = 0  # rank 2, at or below the rank kept
    got = truncate_rank(matrix.to(dtype).cuda(), rank).double().cpu().numpy()
    want = _numpy_truncation(matrix.to(dtype), rank)
    assert np.isfinite(got).all() and not got[1].any()
    # float32: the products sum hundreds of terms, so agreement is to a few 1e-5 of the largest entry, not 1e-7
    assert np.abs(got - want).max() <= (1e-4 if dtype == torch.float32 else 1e-10) * np.abs(want).max()


def test_rank_filter_with_variance_conservation_keeps_the_summed_variance():
    grad = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = LowRankFilter(2).apply("x", None, grad, None)
    assert torch.allclose(out.sum(1).flatten(1).var(1), grad.sum(1).flatten(1).var(1))
    assert torch.linalg.matrix_rank(out[0].reshape(6, -1)) == 2


def test_every_registered_policy_parses_and_labels_itself():
    stats = _statistics(mean=np.zeros(2), std=np.ones(2))
    assert set(POLICIES) == {"cls", "ins", "topq", "absq", "act", "pca"}
    assert SIPConfig.parse("pca:8").rank == 8 and SIPConfig.parse("pca:8").label == "pca:8"
    assert SIPConfig.parse("ins:0.1", stats=stats).quantile == 0.1
    assert SIPConfig.parse("act:0.5").label == "act:0.5"


@pytest.mark.parametrize("make, message", [
    (lambda: SIPConfig(gamma=-1), "gamma must be positive"),
    (lambda: SIPConfig(policy="cls"), "needs calibration statistics"),
    (lambda: SIPConfig(policy="nope"), "unknown SIP policy"),
    (lambda: SIPConfig(fraction=0), "fraction must be in"),
    (lambda: SIPConfig(policy="pca", rank=0), "rank must be"),
    (lambda: SIPConfig(layer_ratio=2.0), "layer_ratio must be"),
    (lambda: SIPConfig.parse("pca:2.5"), "whole number"),
    (lambda: SIPConfig.parse("topq:nan"), "finite"),
    (lambda: MethodOptions(ig_steps=0), "ig_steps must be"),
    (lambda: MethodOptions(smoothgrad_noise=-0.1), "smoothgrad_noise"),
    (lambda: MethodOptions(ig_baseline="white"), "unknown ig_baseline"),
    (lambda: EvalSettings(steps=-1), "steps must be"),
    (lambda: EvalSettings(methods=("grad", "nope")), "unknown method"),
    (lambda: EvalSettings(method_options={"ig_steps": 0}), "ig_steps must be"),
    (lambda: EvalSettings(sips=("topq:0.25", "topq:0.25")), "listed twice"),
])
def test_configs_refuse_bad_values_when_constructed(make, message):
    with pytest.raises(SipgradError, match=message):
        make()


def test_library_errors_speak_of_parameters_not_flags():
    with pytest.raises(SipgradError) as caught:
        SIPConfig(policy="cls")
    assert "--" not in str(caught.value)
    with pytest.raises(SipgradError) as caught:
        SIPConfig(layer_ratio=0)
    assert "--" not in str(caught.value) and "layer_ratio" in str(caught.value)


def test_gamma_default_is_infinite():
    assert math.isinf(SIPConfig().gamma)
