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


def test_effective_rank_normalises_the_singular_values_not_their_squares():
    # Roy & Vetterli: p_i = s_i / sum(s). s = (3, 1): p = (3/4, 1/4), exp(H) = 1.7548; energies would give 1.3841.
    expected = float(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert effective_rank(torch.tensor([[3.0, 1.0]], dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)
    grad = torch.zeros(1, 2, 2, 2)
    grad[0, 0, 0, 0], grad[0, 1, 0, 1] = 3.0, -1.0  # a 2 x 4 matrix with singular values 3 and 1
    spectrum = gradient_spectrum(grad, centre=False)
    torch.testing.assert_close(spectrum.singular_values[0], torch.tensor([3.0, 1.0]))
    assert spectrum.effective_rank[0].item() == pytest.approx(expected, rel=1e-6)


def test_signed_components_and_loadings_rebuild_the_gradient():
    # SVD signs are arbitrary; flipping a map must flip its loading too, so that G = sum_k s_k u_k v_k^T still holds.
    grad = torch.randn(6, 3, 2, 3, generator=torch.Generator().manual_seed(4))  # C = 3 <= HW = 6: all components
    spectrum = gradient_spectrum(grad, components=3, centre=True)
    centred = grad - grad.mean(dim=(2, 3), keepdim=True)
    rebuilt = torch.einsum("bk,bkc,bkhw->bchw", spectrum.singular_values, spectrum.loadings, spectrum.components)
    torch.testing.assert_close(rebuilt, centred, atol=1e-5, rtol=1e-5)
    maps = spectrum.components.flatten(2)
    assert (maps.gather(2, maps.abs().argmax(dim=2, keepdim=True)) > 0).all()


def test_energy_in_more_components_than_exist_is_all_of_it():
    # A 1 x 2 map has at most 2 components: the "top-3 energy" is all the energy, not more.
    grad = torch.randn(3, 4, 1, 2, generator=torch.Generator().manual_seed(0))
    spectrum = gradient_spectrum(grad, centre=False)
    torch.testing.assert_close(spectrum.energy_in_top(3), torch.ones(3))
    torch.testing.assert_close(spectrum.energy_in_top(1), spectrum.explained[:, 0])
