"""Figures: image | heatmap | overlay panels, and side-by-side comparisons."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.render.overlay import heatmap, overlay


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_panels(path: str | os.PathLike, image: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str],
                suptitle: str = "", colormap: str = "jet", alpha: float = 0.5, clip_percentile: float = 99.0) -> None:
    """Save a figure: the image, then heatmap and overlay for each map (one row per map)."""
    plt = pyplot()
    rows = len(maps)
    fig, axes = plt.subplots(rows, 3, figsize=(10.5, 3.6 * rows), squeeze=False)
    for row, (saliency, title) in enumerate(zip(maps, titles)):
        panels = (image, heatmap(saliency, colormap, clip_percentile),
                  overlay(image, saliency, alpha, colormap, clip_percentile))
        for col, (panel, label) in enumerate(zip(panels, ("image", f"{title}: saliency", f"{title}: overlay"))):
            axes[row, col].imshow(panel)
            axes[row, col].set_title(label, fontsize=9)
            axes[row, col].axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
