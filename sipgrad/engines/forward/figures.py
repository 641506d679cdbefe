"""Figures of the forward-gradient experiments: accuracy curves and gradient row-correlation heatmaps."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sipgrad.io.atomic import atomic_write
from sipgrad.render.figure import pyplot


def save_accuracy_curves(path: str | os.PathLike, curves: Sequence[tuple[str, Sequence[int], Sequence[float]]],
                         title: str) -> None:
    """Test accuracy vs training step, one line per (label, steps, accuracies); the legend sits outside the axes.

    Backprop runs are dashed, forward-gradient runs solid; colours cycle through 20 so that
    near-identical curves stay distinguishable.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colours = plt.get_cmap("tab20" if len(curves) > 10 else "tab10").colors
    for index, (label, steps, accuracies) in enumerate(curves):
        ax.plot(steps, accuracies, label=label, linewidth=1.6, color=colours[index % len(colours)],
                linestyle="--" if label.startswith("backprop") else "-")
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training step", fontsize=11)
    ax.set_ylabel("test accuracy", fontsize=11)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_row_correlations(path: str | os.PathLike, correlations: Mapping[str, torch.Tensor], title: str) -> None:
    """One heatmap per layer of the row-by-row correlation of its weight gradient, with a shared colour bar."""
    plt = pyplot()
    count = len(correlations)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns + 1.0, 4.2 * rows), squeeze=False)
    image = None
    for ax, (name, matrix) in zip(axes.flat, correlations.items()):
        image = ax.imshow(np.asarray(matrix, dtype=np.float64), cmap="coolwarm", vmin=-1, vmax=1,
                          interpolation="nearest")
        ax.set_title(f"{name} ({matrix.shape[0]} rows)", fontsize=10)
        ax.set_xlabel("row (output unit)", fontsize=10)
        ax.set_ylabel("row (output unit)", fontsize=10)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes((0.88, 0.15, 0.018, 0.7)))
        bar.set_label("correlation (white: row with zero gradient)", fontsize=10)
        bar.ax.tick_params(labelsize=9)
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
