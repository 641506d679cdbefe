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


def _legible_sizes(fig) -> list[float]:
    """Font size in px (the figures are saved at 100 dpi) of every visible label."""
    from matplotlib.text import Text

    return [t.get_fontsize() * 100 / 72 for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_spectrum_plot_keeps_configs_apart_and_labels_legible(small_batch, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from sipgrad.analysis import analyze_gradients
    from sipgrad.render.spectrum import components_figure, save_spectrum_plot, spectrum_figure
    from tests.conftest import make_small_cnn

    model, layers = make_small_cnn(), ("conv2", "conv3")
    analyses = [analyze_gradients(model, small_batch, layers=layers, sip=sip, components=2)
                for sip in (None, "topq:0.25", "topq:0.5")]
    fig = spectrum_figure(analyses)
    try:
        rank_ax, energy_ax = fig.axes
        assert [t.get_text() for t in energy_ax.get_xticklabels()] == list(layers)
        assert min(_legible_sizes(fig)) >= 10
        for ax, column in ((rank_ax, "effective rank"), (energy_ax, "top-3 energy")):
            lines = ax.get_lines()
            assert [line.get_label() for line in lines] == ["plain", "topq:0.25", "topq:0.5"]
            assert len({to_hex(line.get_color()) for line in lines}) == 3
            assert len({line.get_marker() for line in lines}) == 3 and len({line.get_linestyle() for line in lines}) == 3
            # The values plotted are the analyses' own medians (only the x positions are nudged apart).
            for line, analysis in zip(lines, analyses):
                assert np.allclose(line.get_ydata(), [row[column] for row in analysis.summary()])
                assert np.allclose(np.round(line.get_xdata()), np.arange(len(layers)))
    finally:
        plt.close(fig)
    save_spectrum_plot(tmp_path / "spectrum.png", analyses)
    assert Image.open(tmp_path / "spectrum.png").size[0] >= 720

    image = np.full((32, 32, 3), 128, np.uint8)
    fig = components_figure(image, analyses[:2], 0, "conv3")
    try:
        colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "component / its largest |value|"
        assert len(fig.axes) == 2 * 3 + 1  # 2 configs x (image + 2 components), and the colour bar
        assert min(_legible_sizes(fig)) >= 10
    finally:
        plt.close(fig)
