"""Overlay colours as values: the default clip percentile, sparse maps, negative values, the
colormap's direction and the blend weights. Each test was checked to fail on a mutant the
older tests let through (benchmarks/saliency_mutations.py)."""

import numpy as np
import pytest

from sipgrad.render import heatmap, normalize_map, overlay
from sipgrad.render.overlay import map_scale

JET_COLD, JET_HOT = [0, 0, 128], [128, 0, 0]  # RGB of cv2's jet at 0 and at 255


def test_default_clip_is_the_99th_percentile():
    saliency = np.arange(101, dtype=np.float32)  # the 99th percentile of 0..100 is 99
    assert map_scale(saliency) == pytest.approx(99.0)
    scaled = normalize_map(saliency)
    assert scaled[50] == pytest.approx(50 / 99) and scaled[99] == 1.0 and scaled[100] == 1.0
    assert normalize_map(saliency, clip_percentile=90)[45] == pytest.approx(0.5)


def test_a_sparse_map_is_scaled_by_its_maximum():
    # 1 pixel of 400 is non-zero: the 99th percentile is 0, so the maximum sets the scale
    saliency = np.zeros((20, 20), np.float32)
    saliency[3, 4] = 2.0
    saliency[10, 10] = 0.5
    assert map_scale(saliency) == 2.0
    scaled = normalize_map(saliency)
    assert scaled[3, 4] == 1.0 and scaled[10, 10] == 0.25 and scaled.sum() == 1.25
    colours = heatmap(saliency)
    assert colours[3, 4].tolist() == JET_HOT and colours[0, 0].tolist() == JET_COLD


def test_negative_values_are_coloured_as_zero():
    saliency = np.array([[-2.0, -0.5, 0.0, 1.0, 2.0]], np.float32)
    assert normalize_map(saliency, clip_percentile=100).tolist() == [[0.0, 0.0, 0.0, 0.5, 1.0]]
    colours = heatmap(saliency, clip_percentile=100)
    assert colours[0, 0].tolist() == colours[0, 2].tolist() == JET_COLD and colours[0, 4].tolist() == JET_HOT


def test_the_blend_weights_image_by_1_minus_alpha():
    image = np.full((4, 4, 3), 200, np.uint8)
    saliency = np.zeros((4, 4), np.float32)
    saliency[0, 0] = 1.0
    blended = overlay(image, saliency, alpha=0.25, clip_percentile=100).astype(int)
    # cold pixel: 0.75 * 200 + 0.25 * (0, 0, 128); hot pixel: 0.75 * 200 + 0.25 * (128, 0, 0)
    assert np.abs(blended[1, 1] - [150, 150, 182]).max() <= 1
    assert np.abs(blended[0, 0] - [182, 150, 150]).max() <= 1


def test_overlay_reads_grey_rgba_float_and_channels_first_images_as_explain_does(tmp_path):
    """A float image in [0, 1] came out black; grey and RGBA images crashed in OpenCV."""
    from sipgrad.render import save_panels

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    saliency = np.zeros((12, 16))
    saliency[:4, :5] = 1.0
    reference = overlay(rgb, saliency, alpha=0.3)
    rgba = np.dstack([rgb, np.full((12, 16), 255, np.uint8)])
    for variant in (rgb / 255.0, rgba, np.moveaxis(rgb, -1, 0)):
        assert np.array_equal(overlay(variant, saliency, alpha=0.3), reference)
    grey = rgb[..., 0]
    assert np.array_equal(overlay(grey, saliency, alpha=0.0), np.repeat(grey[..., None], 3, axis=2))
    save_panels(tmp_path / "panels.png", rgb / 255.0, [saliency], ["x"])
    assert (tmp_path / "panels.png").stat().st_size > 1000
