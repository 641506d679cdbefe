"""Frequent Directions: its error bound, its subspace against the exact one, and per-layer projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.analysis.streaming_pca import FrequentDirections, LayerwiseSketch, principal_angles, project
from sipgrad.errors import SipgradError


def low_rank_plus_noise(rows: int, dim: int, rank: int, noise: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rank = min(rank, dim)
    scales = torch.logspace(1, 0.3, rank, dtype=torch.float64)  # distinct strengths, a clear gap to the noise
    factors = torch.randn(rows, rank, generator=generator, dtype=torch.float64) * scales
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=torch.float64)).Q.T
    return factors @ basis + noise * torch.randn(rows, dim, generator=generator, dtype=torch.float64)


def stream(sketch: FrequentDirections, matrix: torch.Tensor, batch: int) -> None:
    for start in range(0, matrix.shape[0], batch):
        sketch.update(matrix[start:start + batch])


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 120), dim=st.integers(2, 40), size=st.integers(2, 12), batch=st.integers(1, 30),
       rank=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_error_bound_holds(rows, dim, size, batch, rank, seed):
    matrix = low_rank_plus_noise(rows, dim, rank, 0.3, seed)
    sketch = FrequentDirections(dim, size)
    stream(sketch, matrix, batch)
    assert sketch.sketch.shape[0] <= size
    error = matrix.T @ matrix - sketch.sketch.T @ sketch.sketch
    eigenvalues = torch.linalg.eigvalsh(error)
    scale = float(matrix.square().sum())
    assert eigenvalues.min() >= -1e-9 * scale  # A^T A - B^T B is positive semi-definite
    spectral = float(eigenvalues.abs().max())
    assert spectral <= sketch.covariance_error_bound() + 1e-9 * scale
    singular = torch.linalg.svdvals(matrix)
    for k in range(0, size):
        tail = float(singular[k:].square().sum())  # ||A - A_k||_F^2
        assert sketch.covariance_error_bound() <= tail / (size + 1 - k) + 1e-9 * scale
        assert spectral <= tail / (size - k) + 1e-9 * scale if k < size else True


def test_many_weak_rows_in_a_new_direction_are_not_lost():
    """The stream that defeats plain truncation (keeping the top l of each SVD): two strong rows, then
    100 weak rows along a third axis, each weaker than the sketch's rows but 100 times stronger together."""
    rows = torch.cat([2 * torch.eye(2, 10, dtype=torch.float64), torch.eye(10, dtype=torch.float64)[2].repeat(100, 1)])
    sketch = FrequentDirections(10, 2)
    stream(sketch, rows, 1)
    error = rows.T @ rows - sketch.sketch.T @ sketch.sketch
    # ||A - A_1||_F^2 = 8, so ||A^T A - B^T B|| <= Delta <= 8 / (2 + 1 - 1) = 4; truncation's error is 100.
    assert torch.linalg.eigvalsh(error).abs().max() <= 4 + 1e-9
    assert sketch.covariance_error_bound() <= 4 + 1e-9
    assert principal_angles(sketch.components(1), torch.eye(10, dtype=torch.float64)[2:3]).max() < 1e-6


def test_decay_sketches_the_weighted_stream():
    decay, size, dim = 0.8, 6, 15
    batches = [low_rank_plus_noise(7, dim, 3, 0.2, seed) for seed in range(9)]
    sketch = FrequentDirections(dim, size, decay=decay)
    for rows in batches:
        sketch.update(rows)
    weights = [decay ** ((len(batches) - 1 - t) / 2) for t in range(len(batches))]
    weighted = torch.cat([w * rows for w, rows in zip(weights, batches)])
    error = weighted.T @ weighted - sketch.sketch.T @ sketch.sketch
    eigenvalues = torch.linalg.eigvalsh(error)
    assert eigenvalues.min() >= -1e-9
    assert eigenvalues.max() <= sketch.covariance_error_bound() + 1e-9
    tail = float(torch.linalg.svdvals(weighted)[2:].square().sum())
    assert sketch.covariance_error_bound() <= tail / (size + 1 - 2) + 1e-9


@pytest.mark.parametrize("batch", [1, 16, 500])
def test_streaming_subspace_matches_the_exact_top_k(batch):
    """Low rank plus noise, 500 x 300: the top-5 subspace of an 10-row sketch is within 0.1 rad of the SVD's."""
    matrix = low_rank_plus_noise(500, 300, 5, 0.05, seed=batch)
    sketch = FrequentDirections(300, 10)
    stream(sketch, matrix, batch)
    exact = torch.linalg.svd(matrix, full_matrices=False).Vh[:5]
    angles = principal_angles(sketch.components(5), exact)
    assert angles.max() < 0.1
    assert sketch.rows_seen == 500
    # Without the gap (pure noise) the same sketch is far off: the tolerance is not vacuous.
    noise = torch.randn(500, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = FrequentDirections(300, 10)
    stream(noisy, noise, batch)
    assert principal_angles(noisy.components(5), torch.linalg.svd(noise, full_matrices=False).Vh[:5]).max() > 0.5


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(3, 30), k1=st.integers(1, 3), k2=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_principal_angles_match_scipy(dim, k1, k2, seed):
    generator = np.random.default_rng(seed)
    first, second = generator.normal(size=(k1, dim)), generator.normal(size=(k2, dim))
    ours = principal_angles(torch.tensor(first), torch.tensor(second)).numpy()
    theirs = np.sort(scipy.linalg.subspace_angles(first.T, second.T))
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


def test_small_angles_are_accurate():
    basis = torch.eye(2, 50, dtype=torch.float64)
    tilted = basis.clone()
    tilted[0, 10] = 1e-9  # a rotation by ~1e-9 rad: arccos would return 0
    angles = principal_angles(basis, tilted)
    assert angles.max().item() == pytest.approx(1e-9, rel=1e-6)


def test_layerwise_projection_and_identity_for_small_layers():
    sketch = LayerwiseSketch({"big": 40, "small": 4}, k=4, sketch_size=8)
    assert set(sketch.sketches) == {"big"}
    rows = {"big": low_rank_plus_noise(30, 40, 3, 0.0, seed=1).float(), "small": torch.randn(30, 4)}
    sketch.update(rows)
    vectors = {"big": torch.randn(40, generator=torch.Generator().manual_seed(2)), "small": torch.randn(4)}
    projected = sketch.project(vectors)
    assert projected["small"] is vectors["small"]
    basis = torch.linalg.svd(rows["big"].double(), full_matrices=False).Vh[:3]  # rank 3 < k: the whole row space
    torch.testing.assert_close(projected["big"].double(), project(vectors["big"].double(), basis), atol=1e-5, rtol=1e-5)
    residual = vectors["big"] - projected["big"]
    assert float((sketch.sketches["big"].components(4).float() @ residual).abs().max()) < 1e-5


def test_bad_arguments():
    with pytest.raises(SipgradError, match="decay"):
        FrequentDirections(5, 2, decay=0)
    with pytest.raises(SipgradError, match="width 5"):
        FrequentDirections(5, 2).update(torch.zeros(3, 4))
    with pytest.raises(SipgradError, match="at least k"):
        LayerwiseSketch({"a": 10}, k=4, sketch_size=2)


def test_default_sketch_size_is_2k_and_every_layer_wider_than_k_is_sketched():
    sketch = LayerwiseSketch({"wide": 50, "just_over": 5, "equal": 4, "narrow": 3}, k=4)
    assert set(sketch.sketches) == {"wide", "just_over"}
    assert [s.sketch_size for s in sketch.sketches.values()] == [8, 8]
    # P = k + 1: a real projection. Rows without a fifth coordinate leave e5 outside the top-4 subspace.
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(20, 5, generator=generator, dtype=torch.float64) * torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0],
                                                                                       dtype=torch.float64)
    sketch.update({"wide": torch.randn(20, 50, generator=generator), "just_over": rows})
    e5 = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert sketch.project({"just_over": e5})["just_over"].abs().max() < 1e-12
    e1 = torch.eye(5, dtype=torch.float64)[0]
    torch.testing.assert_close(sketch.project({"just_over": e1})["just_over"], e1)


def test_forgetting_also_forgets_the_shrinkage():
    # 40 batches of pure noise with decay 0.5: Delta must obey the bound of the *weighted* stream
    # (k = 0: Delta <= ||A_w||_F^2 / (l + 1)); shrinkage that is never decayed grows with every batch instead.
    decay, size, dim = 0.5, 4, 10
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(10, dim, generator=generator, dtype=torch.float64) for _ in range(40)]
    sketch = FrequentDirections(dim, size, decay=decay)
    for rows in batches:
        sketch.update(rows)
    weighted = torch.cat([decay ** ((len(batches) - 1 - t) / 2) * rows for t, rows in enumerate(batches)])
    assert sketch.covariance_error_bound() <= float(weighted.square().sum()) / (size + 1) + 1e-9
    error = weighted.T @ weighted - sketch.sketch.T @ sketch.sketch
    assert torch.linalg.eigvalsh(error).abs().max() <= sketch.covariance_error_bound() + 1e-9


def test_principal_angles_of_one_small_and_one_large_angle():
    # Planes with angles 0.1 and 1.2 rad: each angle must come from its own cosine/sine pair.
    eye = torch.eye(6, dtype=torch.float64)
    first = eye[:2]
    second = torch.stack([math.cos(0.1) * eye[0] + math.sin(0.1) * eye[2],
                          math.cos(1.2) * eye[1] + math.sin(1.2) * eye[3]])
    torch.testing.assert_close(principal_angles(first, second), torch.tensor([0.1, 1.2], dtype=torch.float64))
    torch.testing.assert_close(principal_angles(second, first), torch.tensor([0.1, 1.2], dtype=torch.float64))


def test_the_padded_basis_projects_as_the_components_do():
    # The sketch keeps rows shrunk to zero (trimming them read their number on the host at every chunk):
    # components() leaves them out, basis() keeps them as zero rows, and both give the same projection.
    rank_two = torch.randn(40, 2, dtype=torch.float64) @ torch.randn(2, 30, dtype=torch.float64)
    sketch = FrequentDirections(30, sketch_size=8)
    sketch.update(rank_two)
    components, basis = sketch.components(5), sketch.basis(5)
    assert components.shape == (2, 30) and basis.shape == (5, 30)
    assert torch.equal(basis[2:], torch.zeros(3, 30, dtype=torch.float64))
    vector = torch.randn(30, dtype=torch.float64)
    assert torch.allclose(project(vector, basis), project(vector, components), atol=1e-12)
    assert torch.allclose(components @ components.T, torch.eye(2, dtype=torch.float64), atol=1e-10)
