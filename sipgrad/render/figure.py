"""Figures: image | heatmap | overlay panels, and side-by-side comparisons."""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.io.images import array_to_rgb
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


PANEL_WIDTH = 3.3  # inches: the widest a panel is drawn (three fit in a 10.5 in figure)
PANEL_MAX_HEIGHT = 6.0  # inches: a tall image is drawn narrower rather than taller than this
PANEL_MIN_WIDTH = 1.6  # inches: room for a title wrapped over a few lines


def panel_size(height: int, width: int) -> tuple[float, float]:
    """(width, height) in inches of one panel showing a ``height`` x ``width`` image.

    The panel follows the image's aspect ratio, so a wide or tall image fills its panel
    instead of floating in white space (a fixed 3.5 x 3.6 in panel left 85% of a
    1200 x 200 image's figure empty): ``PANEL_WIDTH`` wide, unless that would make it taller
    than ``PANEL_MAX_HEIGHT``, then narrower (never under ``PANEL_MIN_WIDTH``).
    """
    aspect = height / max(width, 1)
    panel_width = max(PANEL_MIN_WIDTH, min(PANEL_WIDTH, PANEL_MAX_HEIGHT / max(aspect, 1e-6)))
    return panel_width, min(panel_width * aspect, PANEL_MAX_HEIGHT)


def colormap_of(colormap: str):
    """The matplotlib colormap that ``heatmap`` draws with (OpenCV's table, not matplotlib's namesake)."""
    from matplotlib.colors import ListedColormap

    table = heatmap(np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :], colormap, clip_percentile=100.0, scale=1.0)
    return ListedColormap(table[0] / 255.0, name=f"opencv-{colormap}")


def save_panels(path: str | os.PathLike, image: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str],
                suptitle: str = "", colormap: str = "jet", alpha: float = 0.5, clip_percentile: float = 99.0) -> None:
    """Save a figure: the image, then heatmap and overlay for each map (one row per map).

    Panels follow the image's aspect ratio (``panel_size``). One colour bar under the panels
    shows what the heatmap colours mean: each map is divided by its own ``clip_percentile``-th
    value (its maximum when that value is 0, as in a sparse map) and clipped to [0, 1]
    (``normalize_map``), so 1 is "at or above that percentile".
    """
    plt = pyplot()
    fig = panels_figure(image, maps, titles, suptitle, colormap, alpha, clip_percentile)
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def panels_figure(image: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str], suptitle: str = "",
                  colormap: str = "jet", alpha: float = 0.5, clip_percentile: float = 99.0):
    """The figure that ``save_panels`` writes (arguments alike), for callers that draw more on it."""
    import textwrap

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    image, maps = fit_for_figure(array_to_rgb(image), maps)
    plt = pyplot()
    rows = len(maps)
    panel_width, panel_height = panel_size(*image.shape[:2])
    title_lines = 1
    chars = max(12, int(panel_width * 72 / (9 * 0.6)))  # 9 pt text, about 0.6 em per character
    labels = []
    for title in titles:
        row = ["image", f"{title}: saliency", f"{title}: overlay"]
        row = [textwrap.fill(label, chars) for label in row]
        title_lines = max(title_lines, *(label.count("\n") + 1 for label in row))
        labels.append(row)
    title_room = 0.2 * title_lines + 0.1  # inches above each row
    bar_room = 0.6  # the colour bar (0.14 in), its ticks and its label
    figure_width = 3 * panel_width + 0.6
    # A tall image makes a narrow figure: the title wraps rather than running off its edges.
    suptitle = textwrap.fill(suptitle, max(24, int(figure_width * 72 / (10 * 0.6)))) if suptitle else ""
    top_room = 0.25 + 0.2 * suptitle.count("\n") if suptitle else 0.1
    size = (figure_width, rows * (panel_height + title_room) + bar_room + top_room)
    fig = plt.figure(figsize=size, layout="constrained")
    # A grid row of its own for the colour bar, under the heatmap and overlay columns: constrained
    # layout then keeps every row's three panels aligned.
    grid = fig.add_gridspec(rows + 1, 3, height_ratios=[panel_height] * rows + [0.12])
    axes = np.array([[fig.add_subplot(grid[row, col]) for col in range(3)] for row in range(rows)])
    for row, (saliency, label_row) in enumerate(zip(maps, labels)):
        panels = (image, heatmap(saliency, colormap, clip_percentile),
                  overlay(image, saliency, alpha, colormap, clip_percentile))
        for col, (panel, label) in enumerate(zip(panels, label_row)):
            axes[row, col].imshow(panel)
            axes[row, col].set_title(label, fontsize=9)
            axes[row, col].axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    scale = ScalarMappable(Normalize(0.0, 1.0), colormap_of(colormap))
    bar = fig.colorbar(scale, cax=fig.add_subplot(grid[rows, 1:]), orientation="horizontal")
    bar.ax.set_label("<colorbar>")
    # "[0,\u00a01]" keeps the interval on one line when the label wraps.
    label = (f"saliency / its {clip_percentile:g}th percentile (its maximum if that is 0), clipped to "
             f"[0,\u00a01] (each map its own scale)")
    bar_chars = max(24, int(0.66 * size[0] * 72 / (9 * 0.6)))  # the bar spans two of the three columns
    bar.set_label(textwrap.fill(label, bar_chars), fontsize=9)
    bar.ax.tick_params(labelsize=9)
    return fig
