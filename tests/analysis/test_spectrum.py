"""The gradient spectrum against numpy's SVD, and on gradients of known structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.analysis.spectrum import effective_rank, gradient_spectrum


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 4), channels=st.integers(1, 12), height=st.integers(1, 5), width=st.integers(1, 5),
       centre=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_matches_numpy_svd_per_image(batch, channels, height, width, centre, seed):
    grad = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    spectrum = gradient_spectrum(grad, components=2, centre=centre)
    for i in range(batch):  # a naive per-image reference
        matrix = grad[i].reshape(channels, -1).double().numpy()
        if centre:
            matrix = matrix - matrix.mean(axis=1, keepdims=True)
        expected = np.linalg.svd(matrix, compute_uv=False)
        np.testing.assert_allclose(spectrum.singular_values[i].numpy(), expected, rtol=1e-4, atol=1e-5)
        energy = expected ** 2
        if energy.sum() > 1e-12:
            np.testing.assert_allclose(spectrum.explained[i].numpy(), energy / energy.sum(), rtol=1e-4, atol=1e-6)
    assert spectrum.components.shape == (batch, min(2, channels, height * width), height, width)
    # Each image's result does not depend on the rest of the batch.
    alone = gradient_spectrum(grad[-1:], components=2, centre=centre)
    torch.testing.assert_close(alone.singular_values[0], spectrum.singular_values[-1])


def test_rank_one_gradient_is_recovered():
    channel_pattern = torch.tensor([3.0, -1.0, 0.0, 2.0])
    spatial = torch.zeros(5, 6)
    spatial[1:3, 2:5] = 1.0
    spatial[4, 0] = -0.5
    grad = (channel_pattern[:, None, None] * spatial)[None]
    spectrum = gradient_spectrum(grad, components=2, centre=False)
    assert spectrum.explained[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert spectrum.effective_rank[0] == pytest.approx(1.0, abs=1e-4)
    expected_map = spatial / spatial.norm()
    torch.testing.assert_close(spectrum.components[0, 0], expected_map, atol=1e-5, rtol=1e-5)
    assert spectrum.components[0, 0].max() > 0  # sign fixed: the largest-magnitude entry is positive
    loading = spectrum.loadings[0, 0]
    torch.testing.assert_close(loading.abs(), channel_pattern.abs() / channel_pattern.norm(), atol=1e-5, rtol=1e-5)
    # G = s * u v^T holds with the fixed signs.
    rebuilt = spectrum.singular_values[0, 0] * loading[:, None, None] * spectrum.components[0, 0]
    torch.testing.assert_close(rebuilt, grad[0], atol=1e-5, rtol=1e-5)


def test_centering_removes_a_constant_map():
    grad = torch.ones(2, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0])[None, :, None, None]
    assert float(gradient_spectrum(grad, centre=True).singular_values.abs().max()) < 1e-6
    assert float(gradient_spectrum(grad, centre=True).effective_rank.abs().max()) == 0.0
    assert gradient_spectrum(grad, centre=False).effective_rank[0] == pytest.approx(1.0, abs=1e-4)


def test_effective_rank_of_flat_and_zero_spectra():
    values = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(effective_rank(values), torch.tensor([4.0, 1.0, 0.0]))


def test_rejects_non_image_gradients():
    with pytest.raises(ValueError, match="B x C x H x W"):
        gradient_spectrum(torch.zeros(3, 4))


def test_the_old_center_spelling_still_works_with_a_warning():
    grad = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DeprecationWarning, match="centre"):
        old = gradient_spectrum(grad, center=False)
    assert torch.equal(old.singular_values, gradient_spectrum(grad, centre=False).singular_values)
