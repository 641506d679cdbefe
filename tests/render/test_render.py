import numpy as np
import pytest
import torch
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


def test_components_figure_shows_the_requested_image(small_batch):
    from sipgrad.analysis import analyze_gradients
    from sipgrad.render.figure import pyplot
    from sipgrad.render.spectrum import components_figure
    from tests.conftest import make_small_cnn
    analysis = analyze_gradients(make_small_cnn(), small_batch, layers=("conv3",), components=2)
    spectrum = analysis.spectra["conv3"]
    image = np.full((32, 32, 3), 128, np.uint8)
    fig = components_figure(image, [analysis], 1, "conv3")
    try:
        assert fig.axes[0].get_title() == f"plain: rank {float(spectrum.effective_rank[1]):.1f}"
        comp = spectrum.components[1, 0].numpy()
        drawn = fig.axes[1].images[1].get_array()
        np.testing.assert_allclose(drawn, comp / np.abs(comp).max(), rtol=1e-6)
        assert np.abs(drawn).max() == pytest.approx(1.0)  # signed: scaled by the largest |value|
    finally:
        pyplot().close(fig)


def test_components_are_scaled_by_their_largest_absolute_value():
    from types import SimpleNamespace

    from sipgrad.render.figure import pyplot
    from sipgrad.render.spectrum import components_figure
    comp = torch.tensor([[[[-4.0, 1.0], [0.0, 2.0]]]])  # 1 image x 1 component x 2 x 2, negative-dominant
    spectrum = SimpleNamespace(components=comp, effective_rank=torch.tensor([1.0]), explained=torch.tensor([[1.0]]))
    analysis = SimpleNamespace(spectra={"L": spectrum}, sip=None, names=["x"])
    fig = components_figure(np.zeros((2, 2, 3), np.uint8), [analysis], 0, "L")
    try:
        np.testing.assert_allclose(fig.axes[1].images[1].get_array(), [[-1.0, 0.25], [0.0, 0.5]])
    finally:
        pyplot().close(fig)


def _saved_rgb(path):
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_save_overlay_png_honours_alpha(tmp_path):
    from sipgrad.render import overlay, save_overlay_png
    image = np.full((4, 4, 3), 200, np.uint8)
    saliency = np.zeros((4, 4), np.float32); saliency[0, 0] = 1
    save_overlay_png(tmp_path / "o.png", image, saliency, alpha=0.25, clip_percentile=100)
    assert np.array_equal(_saved_rgb(tmp_path / "o.png"), overlay(image, saliency, 0.25, clip_percentile=100))
    assert np.abs(_saved_rgb(tmp_path / "o.png")[1, 1] - [150, 150, 182]).max() <= 1


def test_panels_figure_honours_alpha_and_clip_percentile():
    from sipgrad.render.figure import panels_figure, pyplot
    from sipgrad.render.overlay import heatmap, overlay
    image = np.full((30, 40, 3), 200, np.uint8)
    saliency = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    fig = panels_figure(image, [saliency], ["grad"], "t", alpha=0.2, clip_percentile=50)
    try:
        assert np.array_equal(fig.axes[1].images[0].get_array(), heatmap(saliency, "jet", 50))
        assert np.array_equal(fig.axes[2].images[0].get_array(), overlay(image, saliency, 0.2, "jet", 50))
    finally:
        pyplot().close(fig)


def test_save_panels_passes_clip_percentile(tmp_path, monkeypatch):
    import sipgrad.render.figure as figure
    seen = {}
    real = figure.panels_figure
    monkeypatch.setattr(figure, "panels_figure", lambda *a, **k: seen.setdefault("args", a) and real(*a, **k))
    figure.save_panels(tmp_path / "f.png", np.zeros((8, 8, 3), np.uint8), [np.ones((8, 8))], ["g"], "t",
                       alpha=0.3, clip_percentile=90)
    assert seen["args"][5:] == (0.3, 90)
