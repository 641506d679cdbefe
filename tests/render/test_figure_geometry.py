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
