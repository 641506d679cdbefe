"""The gradient-structure figures: what their axes show."""

from __future__ import annotations

import numpy as np

from sipgrad.analysis import gradient_plots


def test_spectrum_axes_label_exactly_the_measured_batch_sizes_and_k(tmp_path, monkeypatch):
    rows = [{"layer": layer, "batch size": size, "effective rank": 3.0 + size / 10,
             "cosine": {"1": 0.3, "4": 0.6}, "explained": list(np.full(8, 1 / 8))}
            for layer in ("1", "all") for size in (32, 64)]
    saved = []
    real_save = gradient_plots._save
    monkeypatch.setattr(gradient_plots, "_save", lambda fig, path: (saved.append(fig), real_save(fig, path)))
    gradient_plots.save_spectrum_figure(tmp_path / "spectrum.png", rows)
    rank_ax, cos_ax, _ = saved[0].axes
    # a log axis labels only powers of ten by default: 32, 64, 1 and 4 would get no label (10^1 only)
    assert [t.get_text() for t in rank_ax.get_xticklabels()] == ["32", "64"]
    assert [t.get_text() for t in cos_ax.get_xticklabels()] == ["1", "4"]
    assert (tmp_path / "spectrum.png").stat().st_size > 10_000


def test_dense_log_ticks_are_thinned_so_labels_do_not_touch():
    from sipgrad.analysis.gradient_plots import _spaced_ticks

    sizes = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    kept = _spaced_ticks(sizes, axis_inches=3.9, font_points=10)
    assert kept[0] == 8 and kept[-1] == 1024 and set(kept) <= set(sizes)
    assert len(kept) >= 7 and 768 not in kept  # all 14 ran together: "96128", "192256", "384512768"
    assert _spaced_ticks([1000, 1024], axis_inches=3.75, font_points=10) == [1024]  # not "10001024"
    # Few, well-spaced values are all kept (the committed figures' 32..1024 and 1..32).
    assert _spaced_ticks([32, 64, 128, 256, 512, 1024], 3.9, 10) == [32, 64, 128, 256, 512, 1024]
    assert _spaced_ticks([1, 2, 4, 8, 16, 32], 3.9, 10) == [1, 2, 4, 8, 16, 32]
    inches_per_decade = 3.9 / np.log10(1024 * 1.25 / (8 / 1.25))
    for a, b in zip(kept, kept[1:]):  # centres apart by at least the two half-labels (0.6 em a digit) + a gap
        needed = (0.6 * 10 / 72 * (len(str(a)) + len(str(b))) / 2 + 0.1) / inches_per_decade
        assert np.log10(b / a) >= needed


def test_every_batch_size_line_has_its_own_colour(tmp_path, monkeypatch):
    """Matplotlib's 10-colour cycle gave B = 384 the colour of B = 8."""
    sizes = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    rows = [{"layer": "all", "batch size": size, "effective rank": 3.0, "cosine": {"1": 0.3, "4": 0.6},
             "explained": [0.5, 0.5]} for size in sizes]
    saved = []
    real_save = gradient_plots._save
    monkeypatch.setattr(gradient_plots, "_save", lambda fig, path: (saved.append(fig), real_save(fig, path)))
    gradient_plots.save_spectrum_figure(tmp_path / "spectrum.png", rows)
    lines = saved[0].axes[1].get_lines()
    assert len(lines) == len(sizes) and len({line.get_color() for line in lines}) == len(sizes)
