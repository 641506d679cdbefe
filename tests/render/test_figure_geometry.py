"""Geometry of the figures: axis limits, overlay extents, figure sizes and colour bars.

Each test checks a number that was wrong once (an audit found them): a single layer's configs
spread over the whole x axis, a component overlay shifted by half a pixel, explain figures
sized for square images only, and explain heatmaps without a colour bar.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def plt():
    from sipgrad.render.figure import pyplot

    plt = pyplot()
    yield plt
    plt.close("all")


def _analyses(small_batch, layers, sips=(None, "topq:0.25", "topq:0.5")):
    from sipgrad.analysis import analyze_gradients
    from tests.conftest import make_small_cnn

    model = make_small_cnn()
    return [analyze_gradients(model, small_batch, layers=layers, sip=sip, components=2) for sip in sips]


def test_one_layer_spectrum_keeps_the_configs_nudge_small(small_batch, plt):
    from sipgrad.render.spectrum import spectrum_figure

    fig = spectrum_figure(_analyses(small_batch, ("conv3",)))
    for ax in fig.axes:
        assert ax.get_xlim() == pytest.approx((-0.5, 0.5))
        # The three configs are 0.06 apart in data units: a visible but small fraction of the axis.
        xs = sorted(line.get_xdata()[0] for line in ax.get_lines())
        assert xs == pytest.approx([-0.06, 0.0, 0.06])
    fig = spectrum_figure(_analyses(small_batch, ("conv2", "conv3"), (None,)))
    assert fig.axes[1].get_xlim() == pytest.approx((-0.5, 1.5))


def test_components_cover_the_image_pixels_exactly(small_batch, plt):
    from sipgrad.render.spectrum import components_figure

    image = np.full((30, 40, 3), 128, np.uint8)
    fig = components_figure(image, _analyses(small_batch, ("conv3",), (None,)), 0, "conv3")
    overlays = [ax for ax in fig.axes if len(ax.images) == 2]
    assert overlays
    for ax in overlays:
        picture, component = ax.images
        assert picture.get_extent() == pytest.approx((-0.5, 39.5, 29.5, -0.5))
        assert component.get_extent() == pytest.approx(picture.get_extent())


MAGENTA = (255, 0, 255)  # no colour of jet, so these pixels are the image panels only


@pytest.mark.parametrize("height, width, least, ratios", [
    (200, 1200, 0.10, (0.2, 0.4)), (900, 200, 0.18, (2.0, 3.0)), (300, 450, 0.18, (0.5, 0.8))])
def test_explain_figures_follow_the_image_aspect(tmp_path, height, width, least, ratios):
    from PIL import Image

    from sipgrad.render.figure import save_panels

    image = np.zeros((height, width, 3), np.uint8)
    image[:] = MAGENTA
    ramp = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    save_panels(tmp_path / "f.png", image, [ramp, ramp ** 2], ["grad", "grad + SIP topq:0.25"], "title")
    saved = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    # Two image panels: with square 3.5 x 3.6 in panels a 1200 x 200 image covered 4.8% of
    # the figure, a 200 x 900 one 7.6%.
    covered = np.all(saved == MAGENTA, axis=2).mean()
    assert covered >= least
    # Figure height / width: the old fixed size gave 0.69 whatever the image.
    assert ratios[0] <= saved.shape[0] / saved.shape[1] <= ratios[1]


@pytest.mark.parametrize("height, width", [(200, 1200), (900, 200), (30, 40)])
def test_every_label_of_an_explain_figure_is_inside_it(plt, height, width):
    from sipgrad.render.figure import panels_figure

    image = np.zeros((height, width, 3), np.uint8)
    saliency = np.random.default_rng(0).random((height, width)).astype(np.float32)
    fig = panels_figure(image, [saliency, saliency], ["integrated gradients", "integrated gradients + SIP topq:0.25"],
                        "efficientnet_lite0 | integrated gradients + SIP topq:0.25 | Egyptian cat (79.6%)")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    texts = [fig._suptitle, bar.xaxis.label, *bar.get_xticklabels(),
             *(ax.title for ax in fig.axes if ax.get_label() != "<colorbar>")]
    texts = [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]
    assert any("percentile" in t.get_text() for t in texts)
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, text.get_text()


def test_explain_heatmaps_have_one_labelled_colour_bar_in_their_colours(plt):
    from sipgrad.render.figure import panels_figure
    from sipgrad.render.overlay import heatmap

    image = np.zeros((30, 40, 3), np.uint8)
    saliency = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    fig = panels_figure(image, [saliency, saliency], ["grad", "grad + SIP"], "title", colormap="inferno",
                        clip_percentile=95)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    label = bars[0].get_xlabel()
    assert "95th percentile" in label and "clipped to [0,\u00a01]" in label
    colorbar = bars[0]._colorbar  # matplotlib's Colorbar behind the axes
    cmap = colorbar.cmap
    for value in (0.0, 0.5, 1.0):  # the bar's colours are the heatmap's (OpenCV's table, not matplotlib's)
        drawn = heatmap(np.array([[value]], np.float32), "inferno", clip_percentile=100.0, scale=1.0)[0, 0]
        assert np.allclose(np.array(cmap(value)[:3]) * 255, drawn, atol=3.0)  # neighbouring table entries
    assert (colorbar.norm.vmin, colorbar.norm.vmax) == (0.0, 1.0)
