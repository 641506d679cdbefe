"""Accuracy figures: near-identical forward runs get a panel each, beside their own backprop reference."""

import matplotlib

matplotlib.use("Agg")

from sipgrad.engines.forward.figures import accuracy_figure, save_accuracy_curves  # noqa: E402
from sipgrad.render.figure import pyplot  # noqa: E402

STEPS = [100, 200, 300]


def _labels(ax):
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_one_forward_run_is_one_panel_with_every_reference():
    curves = [("forward gaussian K=32 (adam)", STEPS, [0.2, 0.5, 0.8]), ("backprop (adam)", STEPS, [0.9, 0.95, 0.97])]
    fig = accuracy_figure(curves, "mlp")
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(visible) == 1 and sorted(_labels(visible[0])) == sorted(label for label, _, _ in curves)
    pyplot().close(fig)


def test_several_runs_are_small_multiples_each_beside_its_matching_reference():
    curves = [("backprop (adam)", STEPS, [0.9] * 3), ("backprop (adam, 5-bit)", STEPS, [0.8] * 3),
              ("forward gaussian K=32 (adam)", STEPS, [0.5] * 3),
              ("forward gaussian K=32 (adam, 5-bit)", STEPS, [0.4] * 3),
              ("forward layerwise K=32 (sgd)", STEPS, [0.3] * 3)]
    fig = accuracy_figure(curves, "binary-mlp")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [curves[2][0], curves[3][0], curves[4][0]]
    assert _labels(panels[0]) == ["backprop (adam)", curves[2][0]]
    assert _labels(panels[1]) == ["backprop (adam, 5-bit)", curves[3][0]]
    assert _labels(panels[2]) == ["backprop (adam)", "backprop (adam, 5-bit)", curves[4][0]]  # no match: all
    assert all(panel.get_xlabel() == "training step" for panel in panels)  # one row: every panel has the axis
    pyplot().close(fig)


def test_the_png_is_written(tmp_path):
    save_accuracy_curves(tmp_path / "a.png", [("forward gaussian K=1 (sgd)", STEPS, [0.1, 0.2, 0.3])], "t")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
