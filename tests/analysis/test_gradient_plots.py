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
