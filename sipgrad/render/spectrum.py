"""Figures of gradient spectra: per-layer effective rank and energy, and spatial components.

Both figures are meant to be read at 100% zoom: fonts from ``styles.READABLE_FONTS`` (no
label under 10 px at the 100 dpi they are saved with), one distinct colour, marker and dash
per SIP config, and a colour bar for every heatmap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.render.figure import PANEL_MAX_HEIGHT, pyplot
from sipgrad.render.styles import READABLE_FONTS, series_styles

if TYPE_CHECKING:
    from sipgrad.analysis.gradients import GradientAnalysis


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def spectrum_figure(analyses: Sequence[GradientAnalysis], top: int = 3):
    """Two panels over the analysed layers (model order): median effective rank, and the median
    share of gradient energy in the ``top`` strongest components; one line per SIP config.

    The panels sit one above the other so the layer names (the shared x axis) can be long, and
    each config's line is nudged sideways a little so equal values do not hide each other.
    """
    plt = pyplot()
    layers = list(analyses[0].layers) if analyses else []
    labels = [analysis.sip or "plain" for analysis in analyses]
    styles = series_styles([("sip", label) for label in labels])
    with plt.rc_context(READABLE_FONTS):
        width = max(7.2, min(14.0, 1.2 + 0.32 * len(layers)))
        label_room = 0.075 * max((len(layer) for layer in layers), default=4)
        fig, (rank_ax, energy_ax) = plt.subplots(2, 1, figsize=(width, 5.6 + label_room), sharex=True)
        positions = np.arange(len(layers), dtype=float)
        for i, (analysis, label) in enumerate(zip(analyses, labels)):
            rows = analysis.summary(top)
            nudge = (i - (len(analyses) - 1) / 2) * 0.06
            style = styles[("sip", label)].kwargs()
            rank_ax.plot(positions + nudge, [r["effective rank"] for r in rows], label=label, markersize=5, **style)
            energy_ax.plot(positions + nudge, [r[f"top-{top} energy"] for r in rows], label=label, markersize=5,
                           **style)
        rank_ax.set_title("effective rank of the channel gradients (median over images)", loc="left")
        rank_ax.set_ylabel("effective rank")
        energy_ax.set_title(f"share of gradient energy in the top-{top} components (median)", loc="left")
        energy_ax.set_ylabel("energy share")
        energy_ax.set_ylim(0, 1.02)
        energy_ax.set_xticks(positions, layers, rotation=90)
        energy_ax.set_xlabel("layer (model order)")
        # Fixed limits: autoscaling would spread the configs' small sideways nudges (+-0.06)
        # across the whole axis when there is only one layer.
        energy_ax.set_xlim(-0.5, len(layers) - 0.5)
        for ax in (rank_ax, energy_ax):
            ax.grid(alpha=0.3)
        if analyses:
            rank_ax.legend(title="SIP", loc="best")
        fig.tight_layout()
    return fig


def save_spectrum_plot(path: str | os.PathLike, analyses: Sequence[GradientAnalysis], top: int = 3) -> None:
    """Write ``spectrum_figure(analyses, top)`` as a PNG."""
    plt = pyplot()
    fig = spectrum_figure(analyses, top)
    _save(fig, path)
    plt.close(fig)


def components_figure(image: np.ndarray, analyses: Sequence[GradientAnalysis], index: int, layer: str):
    """The image, then the strongest spatial gradient components of ``layer`` laid over it,
    one row per SIP config. Components are signed (red and blue are opposite signs) and each
    is scaled to its own largest |value|, which the shared colour bar shows as -1 and +1."""
    plt = pyplot()
    count = analyses[0].spectra[layer].components.shape[1]
    height, width = image.shape[:2]
    with plt.rc_context(READABLE_FONTS):
        # The image's aspect plus a title line, the aspect capped as explain's panels are (PANEL_MAX_HEIGHT): a
        # 1 x 3000 strip would otherwise ask for a figure 7800 inches tall (gigabytes of canvas).
        row_height = 2.6 * min(height / max(width, 1), PANEL_MAX_HEIGHT / 2.6) + 0.45
        fig, axes = plt.subplots(len(analyses), count + 1, figsize=(2.6 * (count + 1) + 1.0,
                                                                     row_height * len(analyses) + 0.4),
                                 squeeze=False, layout="constrained")
        shown = None
        for row, analysis in enumerate(analyses):
            spectrum = analysis.spectra[layer]
            axes[row, 0].imshow(image)
            axes[row, 0].set_title(f"{analysis.sip or 'plain'}: rank {float(spectrum.effective_rank[index]):.1f}")
            for k in range(count):
                component = spectrum.components[index, k].numpy()
                limit = float(np.abs(component).max()) or 1.0
                ax = axes[row, k + 1]
                ax.imshow(image)
                # The image's own extent (pixel centres at integers, edges at -0.5): the
                # component then covers exactly the image's pixels, without a half-pixel shift.
                shown = ax.imshow(component / limit, cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.6,
                                  interpolation="bilinear", extent=ax.images[0].get_extent())
                ax.set_title(f"component {k + 1}: {float(spectrum.explained[index, k]):.0%}")
            for ax in axes[row]:
                ax.axis("off")
        fig.suptitle(f"{analyses[0].names[index]} | {layer} (% = share of gradient energy)")
        if shown is not None:
            bar = fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.7)
            bar.set_label("component / its largest |value|")
    return fig


def save_components_figure(path: str | os.PathLike, image: np.ndarray, analyses: Sequence[GradientAnalysis],
                           index: int, layer: str) -> None:
    """Write ``components_figure(image, analyses, index, layer)`` as a PNG."""
    plt = pyplot()
    fig = components_figure(image, analyses, index, layer)
    _save(fig, path)
    plt.close(fig)
