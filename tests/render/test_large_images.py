"""Large photos: overlays coloured in row chunks equal the whole-image result; figures shrink first;
compact saliency files."""

import importlib

import numpy as np
import pytest

from sipgrad.render.figure import fit_for_figure, save_panels
from sipgrad.render.overlay import overlay, save_npy


def test_chunked_overlay_equals_the_whole_image_one(monkeypatch):
    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (1100, 37, 3), dtype=np.uint8)
    saliency = (generator.random((1100, 37)) ** 3).astype(np.float32)
    saliency[500:520] *= 50  # the top values sit in one chunk: the scale must still be the whole map's
    chunked = overlay(image, saliency)
    module = importlib.import_module("sipgrad.render.overlay")  # the package re-exports the function's name
    monkeypatch.setattr(module, "ROWS_PER_CHUNK", 10**6)
    assert np.array_equal(chunked, overlay(image, saliency))


def test_overlay_ignores_non_finite_values():
    saliency = np.ones((4, 4), np.float32)
    saliency[0, 0], saliency[1, 1] = np.nan, np.inf
    blended = overlay(np.zeros((4, 4, 3), np.uint8), saliency)
    assert blended.dtype == np.uint8 and blended.shape == (4, 4, 3)
    assert np.array_equal(blended[2, 2], blended[3, 3]) and not np.array_equal(blended[0, 0], blended[2, 2])


def test_figures_are_drawn_from_a_shrunk_copy(tmp_path):
    image = np.zeros((3000, 2000, 3), np.uint8)
    image[:1500] = 255
    saliency = np.zeros((3000, 2000), np.float32)
    saliency[:, :1000] = 1.0
    small, (small_map,) = fit_for_figure(image, [saliency])
    assert small.shape == (1024, 683, 3) and small_map.shape == (1024, 683)
    assert small[0, 0, 0] == 255 and small[-1, 0, 0] == 0 and small_map[0, 0] == 1 and small_map[0, -1] == 0
    same, _ = fit_for_figure(image[:100, :100], [saliency[:100, :100]])
    assert same.shape == (100, 100, 3)
    save_panels(tmp_path / "f.png", image, [saliency], ["grad"], "big")
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.parametrize("dtype, size", [("float32", 4), ("float16", 2)])
def test_compact_saliency_files(tmp_path, dtype, size):
    values = np.array([[0.0, 1e-3, 0.5], [1.0, 70000.0, 3.0]], np.float32)
    save_npy(tmp_path / "m.npy", values, dtype=dtype)
    stored = np.load(tmp_path / "m.npy")
    assert stored.dtype == np.dtype(dtype) and stored.itemsize == size and np.isfinite(stored).all()
    np.testing.assert_allclose(stored[0], values[0], rtol=1e-3)
    assert stored[1, 1] == pytest.approx(70000.0 if dtype == "float32" else 65504.0)  # float16 clips, never inf


def test_float16_files_are_converted_in_chunks_to_the_same_values(tmp_path, monkeypatch):
    module = importlib.import_module("sipgrad.render.overlay")
    monkeypatch.setattr(module, "CHUNK", 7)  # many chunks, the last one partial
    values = (np.random.default_rng(1).standard_normal((13, 11)) * 3e4).astype(np.float32)
    save_npy(tmp_path / "m.npy", values, dtype="float16")
    assert np.array_equal(np.load(tmp_path / "m.npy"), np.clip(values, -65504, 65504).astype(np.float16))


@pytest.mark.parametrize("shape", [(3000, 1), (2, 4000)])
def test_the_components_figure_of_a_strip_stays_a_few_inches(shape):
    # A 1 x 3000 strip asked for a figure 7800 inches tall: gigabytes of canvas, and analyze never finished.
    from sipgrad.analysis import analyze_gradients
    from sipgrad.render.figure import PANEL_MAX_HEIGHT, pyplot
    from sipgrad.render.spectrum import components_figure
    from tests.conftest import make_small_cnn

    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    analysis = analyze_gradients(make_small_cnn(), [image], layers="conv3")
    fig = components_figure(image, [analysis], 0, "conv3")
    width, height = fig.get_size_inches()
    assert height <= PANEL_MAX_HEIGHT + 1.0 and width < 15
    pyplot().close(fig)
