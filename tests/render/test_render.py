import numpy as np
import pytest
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.render import heatmap, normalize_map, overlay, save_panels, save_png


def test_normalize_clips_at_the_percentile():
    saliency = np.arange(100, dtype=np.float32)
    scaled = normalize_map(saliency, clip_percentile=50)
    assert scaled[0] == 0 and scaled[-1] == 1 and scaled[25] == pytest.approx(25 / 49.5)
    assert not normalize_map(np.zeros((3, 3))).any()


def test_overlay_has_the_image_size_and_blends(tmp_path):
    image = np.full((30, 40, 3), 100, np.uint8)
    saliency = np.zeros((15, 20), np.float32)  # a map of another size is resized
    saliency[5, 5] = 1
    blended = overlay(image, saliency, alpha=0.0)
    assert blended.shape == image.shape and np.array_equal(blended, image)
    assert overlay(image, saliency, alpha=1.0).shape == (30, 40, 3)
    assert np.array_equal(heatmap(saliency)[0, 0], [0, 0, 128])  # jet's cold end
    with pytest.raises(SipgradError, match="unknown colormap"):
        heatmap(saliency, "rainbowish")


def test_pngs_and_figures_are_written_whole(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)
    save_panels(tmp_path / "f.png", image, [np.ones((20, 30)), np.eye(20, 30)], ["one", "two"], "title")
    assert Image.open(tmp_path / "f.png").size[1] > Image.open(tmp_path / "f.png").size[0] / 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "f.png"]
