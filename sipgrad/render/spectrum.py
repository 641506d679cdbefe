"""Figures of gradient spectra: per-layer effective rank and energy, and spatial components."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.render.figure import pyplot

if TYPE_CHECKING:
    from sipgrad.analysis.gradients import GradientAnalysis


def _save(fig, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def save_spectrum_plot(path: str | os.PathLike, analyses: Sequence["GradientAnalysis"], top: int = 3) -> None:
    """Two panels over the analysed layers (model order): median effective rank, and the
    median share of gradient energy in the ``top`` strongest components; one line per SIP config."""
    plt = pyplot()
    fig, (rank_ax, energy_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for analysis in analyses:
        rows = analysis.summary(top)
        positions = np.arange(len(rows))
        label = analysis.sip or "plain"
        rank_ax.plot(positions, [r["effective rank"] for r in rows], marker="o", label=label)
        energy_ax.plot(positions, [r[f"top-{top} energy"] for r in rows], marker="o", label=label)
    layers = analyses[0].layers if analyses else ()
    for ax, title in ((rank_ax, "effective rank (median over images)"),
                      (energy_ax, f"energy in top-{top} components (median)")):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(np.arange(len(layers)), layers, rotation=90, fontsize=6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    energy_ax.set_ylim(0, 1)
    _save(fig, path)
    plt.close(fig)


def save_components_figure(path: str | os.PathLike, image: np.ndarray, analyses: Sequence["GradientAnalysis"],
                           index: int, layer: str) -> None:
    """The image, then the strongest spatial gradient components of ``layer`` laid over it,
    one row per SIP config. Components are signed: red and blue are opposite signs."""
    plt = pyplot()
    count = analyses[0].spectra[layer].components.shape[1]
    fig, axes = plt.subplots(len(analyses), count + 1, figsize=(2.8 * (count + 1), 2.8 * len(analyses)), squeeze=False)
    height, width = image.shape[:2]
    for row, analysis in enumerate(analyses):
        spectrum = analysis.spectra[layer]
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{analysis.sip or 'plain'}: rank {float(spectrum.effective_rank[index]):.1f}",
                               fontsize=9)
        for k in range(count):
            component = spectrum.components[index, k].numpy()
            limit = float(np.abs(component).max()) or 1.0
            ax = axes[row, k + 1]
            ax.imshow(image)
            ax.imshow(component, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6, interpolation="bilinear",
                      extent=(0, width, height, 0))
            ax.set_title(f"component {k + 1}: {float(spectrum.explained[index, k]):.0%} of energy", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(f"{analyses[0].names[index]} | {layer}", fontsize=10)
    _save(fig, path)
    plt.close(fig)
