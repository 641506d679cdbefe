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
    """Write ``accuracy_figure(curves, title)`` as a PNG (atomically)."""
    plt = pyplot()
    fig = accuracy_figure(curves, title)
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def accuracy_figure(curves: Sequence[tuple[str, Sequence[int], Sequence[float]]], title: str):
    """Test accuracy vs training step for (label, steps, accuracies) runs; backprop runs are dashed references.

    Forward-gradient runs often trace nearly the same curve, and one line then hides the
    next; with two or more of them the figure is small multiples: a panel per forward run,
    each beside the backprop reference(s) and the 90% line, on shared axes. Their legend is
    one for the whole figure, under the panels: a legend inside a panel covered the curves
    of runs that stay low (a run at 10% accuracy sat under "lower right").
    """
    plt = pyplot()
    references = [curve for curve in curves if curve[0].startswith("backprop")]
    runs = [curve for curve in curves if not curve[0].startswith("backprop")]
    panels = [runs] if len(runs) <= 1 else [[run] for run in runs]
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    single = len(panels) == 1
    colours = plt.get_cmap("tab10").colors
    # A reference keeps one colour in every panel, so the shared legend names it once.
    reference_colour = {ref[0]: "dimgrey" if index == 0 else colours[(index + 5) % len(colours)]
                        for index, ref in enumerate(references)}
    entries = len(references) + len(runs)
    legend_rows = math.ceil(entries / columns)
    fig, axes = plt.subplots(rows, columns, squeeze=False, sharex=True, sharey=True,
                             figsize=(11, 5.5) if single else (4.6 * columns, 3.4 * rows + 0.9 + 0.22 * legend_rows),
                             layout=None if single else "constrained")
    for number, (ax, panel) in enumerate(zip(axes.flat, panels)):
        for label, steps, accuracies in _references_for(panel, references, single):
            ax.plot(steps, accuracies, label=label, linewidth=1.4, linestyle="--", color=reference_colour[label])
        for index, (label, steps, accuracies) in enumerate(panel):
            ax.plot(steps, accuracies, label=label, linewidth=1.6, color=colours[(number + index) % len(colours)])
        ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
        if single:
            ax.set_title(title, fontsize=11)
            ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.set_title(panel[0][0], fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for number, ax in enumerate(list(axes.flat)[:len(panels)]):
        if number + columns >= len(panels):  # nothing below this panel: it carries the step axis
            ax.set_xlabel("training step", fontsize=11)
            ax.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy", fontsize=11)
    if single:
        fig.tight_layout()
    else:
        fig.suptitle(title, fontsize=12)
        handles = {}
        for ax in list(axes.flat)[:len(panels)]:
            for line in ax.get_lines():
                if not line.get_label().startswith("_"):
                    handles.setdefault(line.get_label(), line)
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=columns, fontsize=9,
                   frameon=False)
    return fig


def _settings(label: str) -> str:
    """The parenthesised settings of a run label: "forward gaussian K=32 (adam, 5-bit)" -> "adam, 5-bit"."""
    return label[label.rfind("(") + 1:label.rfind(")")] if label.endswith(")") else ""


def _references_for(panel: Sequence[tuple[str, Sequence[int], Sequence[float]]],
                    references: Sequence[tuple[str, Sequence[int], Sequence[float]]],
                    single: bool) -> Sequence[tuple[str, Sequence[int], Sequence[float]]]:
    """The backprop runs to draw beside a panel: in small multiples, the one with the panel's own
    settings when there is one (binary variants each get their own reference), else all."""
    if single:
        return references
    matching = [ref for ref in references if _settings(ref[0]) == _settings(panel[0][0])]
    return matching or references


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
