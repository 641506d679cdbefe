"""The per-example gradient spectrum against numpy's SVD, and on matrices of known structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.analysis.example_spectrum import (example_gradient_spectrum, model_gradient_spectra,
                                               spectra_over_batch_sizes, spectrum_rows)
from sipgrad.analysis.models import small_model
from sipgrad.errors import SipgradError

KS = (1, 2, 3, 5, 40)


def reference(matrix: np.ndarray, ks, centre: bool):
    """Direct SVD of the B x P matrix, and the projection of the mean on the top-k right vectors."""
    mean = matrix.mean(axis=0)
    data = matrix - mean if centre else matrix
    _, singular, vt = np.linalg.svd(data, full_matrices=False)
    rank = int((singular > 1e-9 * singular[0]).sum())
    cosines = []
    for k in ks:
        basis = vt[:min(k, rank)]
        projected = basis.T @ (basis @ mean)
        cosines.append(np.linalg.norm(projected) / np.linalg.norm(mean))
    return singular, np.array(cosines)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 12), width=st.integers(1, 12), centre=st.booleans(), seed=st.integers(0, 10_000))
def test_matches_numpy_on_wide_and_tall_matrices(batch, width, centre, seed):
    generator = np.random.default_rng(seed)
    matrix = generator.normal(size=(batch, width)) + generator.normal(size=width)  # a shared direction
    spectrum = example_gradient_spectrum(torch.tensor(matrix, dtype=torch.float32), KS, centre=centre)
    singular, cosines = reference(matrix.astype(np.float32).astype(np.float64), KS, centre)
    np.testing.assert_allclose(spectrum.singular_values.numpy(), singular, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(spectrum.explained.sum().item(), 1.0 if singular.max() > 0 else 0.0, atol=1e-5)
    if not (centre and batch == 1):  # a centred single row has no directions at all
        np.testing.assert_allclose(spectrum.mean_projection_cosine.numpy(), cosines, rtol=1e-3, atol=1e-3)
    assert (spectrum.batch_size, spectrum.parameters) == (batch, width)


def test_examples_that_agree_put_the_mean_in_one_direction():
    direction = torch.randn(50, generator=torch.Generator().manual_seed(0))
    matrix = torch.linspace(0.5, 2.0, 16)[:, None] * direction  # rank 1, all along one direction
    spectrum = example_gradient_spectrum(matrix, (1, 4))
    assert spectrum.effective_rank == pytest.approx(1.0, abs=1e-4)
    assert spectrum.mean_projection_cosine.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert spectrum.explained[0].item() == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_examples_need_every_direction():
    # B examples along B orthogonal axes with equal norms: a flat spectrum, cos(g, P_k g) = sqrt(k / B).
    matrix = torch.eye(8, 20) * 3.0
    spectrum = example_gradient_spectrum(matrix, (1, 2, 4, 8))
    assert spectrum.effective_rank == pytest.approx(8.0, rel=1e-5)
    np.testing.assert_allclose(spectrum.mean_projection_cosine.numpy(), np.sqrt([1 / 8, 2 / 8, 4 / 8, 1.0]),
                               rtol=1e-5)


def test_model_spectra_and_nested_batch_sizes():
    model = small_model("mlp", (1, 8, 8), seed=0)
    generator = torch.Generator().manual_seed(1)
    inputs, labels = torch.rand(40, 1, 8, 8, generator=generator), torch.randint(0, 10, (40,), generator=generator)
    steps = []
    spectra = spectra_over_batch_sizes(model, inputs, labels, (32, 8, 32), (1, 16), seed=3, progress=steps.append)
    assert list(spectra) == [8, 32] and list(spectra[8]) == ["1", "3", "all"]
    assert steps == [1, 1, 1]  # the per-example gradients, then each distinct batch size: the bar moves
    assert spectra[8]["all"].parameters == 64 * 64 + 64 + 64 * 10 + 10
    # The B = 8 batch is the first 8 examples of the B = 32 one, with the same seed.
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:8]
    from sipgrad.analysis.per_example import layer_gradients

    direct = model_gradient_spectra(layer_gradients(model, inputs[order], labels[order]), (1, 16))
    torch.testing.assert_close(direct["3"].singular_values, spectra[8]["3"].singular_values)
    rows = spectrum_rows(spectra)
    assert len(rows) == 6 and set(rows[0]) >= {"layer", "batch size", "effective rank", "cosine", "explained"}
    with pytest.raises(SipgradError, match="exceeds the 40 examples"):
        spectra_over_batch_sizes(model, inputs, labels, (41,))


def test_bad_arguments():
    with pytest.raises(SipgradError, match="B x P"):
        example_gradient_spectrum(torch.zeros(3))
    with pytest.raises(SipgradError, match="at least 1"):
        example_gradient_spectrum(torch.ones(3, 3), (0,))
