"""Figures: image | heatmap | overlay panels, and side-by-side comparisons."""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.render.overlay import heatmap, overlay


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


FIGURE_MAX_SIDE = 1024  # px; a panel is drawn about 330 px wide, so more detail is never seen


def fit_for_figure(image: np.ndarray, maps: Sequence[np.ndarray],
                   max_side: int = FIGURE_MAX_SIDE) -> tuple[np.ndarray, list[np.ndarray]]:
    """``image`` and ``maps`` shrunk (area averaging) so the longer side is at most ``max_side``.

    A figure of a 6000 x 4000 photo otherwise makes matplotlib hold several full-size float
    copies (about 1.3 GB measured); shrinking first changes nothing visible at figure size.
    """
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image, list(maps)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    small_maps = [cv2.resize(np.asarray(m, np.float32), size, interpolation=cv2.INTER_AREA) for m in maps]
    return small, small_maps


def save_panels(path: str | os.PathLike, image: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str],
                suptitle: str = "", colormap: str = "jet", alpha: float = 0.5, clip_percentile: float = 99.0) -> None:
    """Save a figure: the image, then heatmap and overlay for each map (one row per map)."""
    image, maps = fit_for_figure(image, maps)
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
