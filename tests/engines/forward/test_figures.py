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


def test_legends_cover_no_curve_and_name_every_line():
    """Runs that stay at 10% accuracy used to sit under a legend fixed at the lower right."""
    import numpy as np

    steps = list(range(50, 401, 50))
    curves = [("forward gaussian K=2 (adam)", steps, [0.10] * 8), ("forward rademacher K=2 (adam)", steps, [0.10] * 8),
              ("backprop (adam)", steps, list(np.linspace(0.12, 0.25, 8))),
              ("backprop (adam, 5-bit)", steps, [0.05] * 8),
              ("forward layerwise K=2 (adam, 5-bit)", steps, [0.02] * 8)]
    fig = accuracy_figure(curves, "low-accuracy runs")
    try:
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
        assert legends
        boxes = [legend.get_window_extent() for legend in legends]
        panels = [ax for ax in fig.axes if ax.axison]
        for ax in panels:
            panel_box = ax.get_window_extent()
            assert not any(panel_box.overlaps(box) for box in boxes), ax.get_title()
            for line in ax.get_lines():
                points = ax.transData.transform(np.column_stack(line.get_data()))
                assert not any(box.contains(x, y) for box in boxes for x, y in points), line.get_label()
        named = {text.get_text() for legend in legends for text in legend.get_texts()}
        assert named == {label for label, _, _ in curves}
        # A reference is drawn in one colour in every panel, so one legend entry names it.
        colours = {}
        for ax in panels:
            for line in ax.get_lines():
                colours.setdefault(line.get_label(), set()).add(line.get_color() if isinstance(line.get_color(), str)
                                                                else tuple(line.get_color()))
        assert all(len(found) == 1 for label, found in colours.items() if label.startswith("backprop"))
        assert min(text.get_fontsize() for legend in legends for text in legend.get_texts()) >= 9
    finally:
        pyplot().close(fig)
