"""Figures of the gradient-structure experiments, drawn from their JSON-ready results.

Both take plain dicts (what ``sipgrad gradients ... --json`` prints and ``*.json`` holds), so
a figure can be redrawn from a saved file without rerunning anything.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from sipgrad.io.atomic import atomic_write
from sipgrad.render.figure import pyplot
from sipgrad.render.styles import series_styles

_FONT = 11
COLOURS = {"sgd": "C0", "momentum": "C1", "pca-sgd": "C2"}  # one colour per optimizer in every figure


def _save(fig, path: str | os.PathLike) -> None:
    if fig.get_layout_engine() is None:  # a figure made with a layout of its own keeps it
        fig.tight_layout()
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _layer_label(layer: str) -> str:
    """A legend entry: "all" is the whole model, "" the root module's own parameters (``LayerLayout``)."""
    return {"all": "whole model", "": "root module"}.get(layer, f"layer {layer}")


def _spaced_ticks(values: Sequence[int], axis_inches: float, font_points: float) -> list[int]:
    """The values to label on a log axis spanning them (padded by 1.25 each side), so that no two
    labels overlap: each needs its width (about 0.6 em a digit) plus a gap. Chosen from the largest
    down, so the largest is always labelled (1000 and 1024 show as 1024)."""
    if len(values) < 2:
        return list(values)
    span = np.log10(values[-1] * 1.25) - np.log10(values[0] / 1.25)
    inches_per_decade = axis_inches / span

    def half_width(value: int) -> float:  # in decades
        return (0.6 * font_points / 72 * len(str(value)) + 0.1) / 2 / inches_per_decade

    kept = [values[-1]]
    for value in reversed(values[:-1]):
        if np.log10(kept[-1]) - np.log10(value) >= half_width(value) + half_width(kept[-1]):
            kept.append(value)
    return kept[::-1]


def save_spectrum_figure(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Three panels: effective rank vs batch size (one line per layer); cos(g, P_k g) vs k for the
    whole model (one line per batch size); and the cumulative explained energy of the largest batch."""
    plt = pyplot()
    fig, (rank_ax, cos_ax, energy_ax) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    sizes = sorted({r["batch size"] for r in rows})
    layer_styles = series_styles([("layer", layer) for layer in layers])
    size_styles = series_styles([("size", size) for size in sizes])  # a colour, marker and dash per line
    for layer in layers:
        mine = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["batch size"])
        rank_ax.plot([r["batch size"] for r in mine], [r["effective rank"] for r in mine],
                     label=_layer_label(layer), **layer_styles[("layer", layer)].kwargs())
    rank_ax.set(xscale="log", xlabel="batch size B", ylabel="effective rank",
                title="effective rank of the B x P gradients")
    for size in sizes:
        row = next(r for r in rows if r["layer"] == "all" and r["batch size"] == size)
        ks = [int(k) for k in row["cosine"]]
        cos_ax.plot(ks, list(row["cosine"].values()), label=f"B = {size}", **size_styles[("size", size)].kwargs())
    cos_ax.set(xscale="log", xlabel="k (top directions kept)", ylabel="cos(g, P_k g)", ylim=(0, 1.02),
               title="batch-mean gradient inside the top-k (whole model)")
    largest = sizes[-1]
    for layer in layers:
        row = next(r for r in rows if r["layer"] == layer and r["batch size"] == largest)
        explained = np.cumsum(row["explained"])
        energy_ax.plot(np.arange(1, len(explained) + 1), explained, label=_layer_label(layer),
                       color=layer_styles[("layer", layer)].color, linestyle=layer_styles[("layer", layer)].linestyle)
    energy_ax.set(xscale="log", xlabel="number of directions", ylabel="share of gradient energy", ylim=(0, 1.02),
                  title=f"cumulative energy, B = {largest}")
    # Log axes label only powers of ten by default: with B = 32, 64 or k = 1, 4 nothing measured would be
    # labelled. Tick the measured batch sizes and k, written plainly, leaving out those whose label
    # would run into its neighbour's (96, 128, 192, ... on one axis).
    ks = sorted({int(k) for r in rows if r["layer"] == "all" for k in r["cosine"]})
    for ax, ticks in ((rank_ax, sizes), (cos_ax, ks)):
        ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
        # A third of the figure less its margins: a lower bound on the panel's width once laid out.
        kept = _spaced_ticks(ticks, 0.75 * fig.get_figwidth() / 3, _FONT - 1)
        ax.set_xticks(kept, [str(t) for t in kept])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    for ax in (rank_ax, cos_ax, energy_ax):
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if len(labels) > 6:  # below the figure, where it hides no line and no label; the layout makes room
            fig.legend(handles, labels, fontsize=_FONT - 1, ncols=min(len(labels), 9), loc="outside lower center",
                       title=ax.get_title(), title_fontsize=_FONT - 1)
        else:
            ax.legend(fontsize=_FONT - 1)
        ax.title.set_fontsize(_FONT)
        ax.xaxis.label.set_fontsize(_FONT)
        ax.yaxis.label.set_fontsize(_FONT)
        ax.tick_params(labelsize=_FONT - 1)
    _save(fig, path)
    plt.close(fig)


def _by_noise(runs: Sequence[dict]) -> list[float]:
    return sorted({run["config"]["label_noise"] for run in runs})


def save_accuracy_figure(path: str | os.PathLike, runs: Sequence[dict]) -> None:
    """Test accuracy vs step, one panel per label-noise share, one line per optimizer (mean over
    seeds; the band spans the seeds' minimum to maximum)."""
    plt = pyplot()
    levels = _by_noise(runs)
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.2), squeeze=False, sharey=True)
    for ax, noise in zip(axes[0], levels):
        optimizers = list(dict.fromkeys(r["config"]["optimizer"] for r in runs if r["config"]["label_noise"] == noise))
        for optimizer in optimizers:
            members = [r for r in runs if r["config"]["label_noise"] == noise and r["config"]["optimizer"] == optimizer]
            length = min(len(m["test_accuracy"]) for m in members)
            steps = members[0]["steps"][:length]
            curves = np.array([m["test_accuracy"][:length] for m in members])
            line, = ax.plot(steps, curves.mean(axis=0), color=COLOURS.get(optimizer),
                            label=f"{optimizer} ({len(members)} seed{'s' if len(members) > 1 else ''})")
            if len(members) > 1:
                ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2)
        _style_step_panel(ax, f"{noise:.0%} of training labels wrong")
    axes[0, 0].set_ylabel("test accuracy", fontsize=_FONT)
    _save(fig, path)
    plt.close(fig)


def _style_step_panel(ax, title: str) -> None:
    """Title, step axis, grid, legend and tick sizes shared by the panels plotted against step."""
    ax.set_title(title, fontsize=_FONT)
    ax.set_xlabel("step", fontsize=_FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_FONT - 1)
    ax.tick_params(labelsize=_FONT - 1)


MOMENTUM_MEASURES = ("cos(v, Pg)", "cos(v, g)", "cos(g, Pg)", "|Pv|/|v|")


def save_momentum_figure(path: str | os.PathLike, runs: Sequence[dict]) -> bool:
    """For the momentum runs: the probe's cosines vs step (mean over seeds), one panel per noise
    share. Returns False (and writes nothing) when there is no momentum run."""
    momentum = [r for r in runs if "cos(v, Pg)" in r["probe"]]
    if not momentum:
        return False
    plt = pyplot()
    levels = _by_noise(momentum)
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.2), squeeze=False, sharey=True)
    for ax, noise in zip(axes[0], levels):
        members = [r for r in momentum if r["config"]["label_noise"] == noise]
        length = min(len(m["steps"]) for m in members)
        steps = members[0]["steps"][:length]
        for measure in MOMENTUM_MEASURES:
            curve = np.nanmean(np.array([m["probe"][measure][:length] for m in members]), axis=0)
            ax.plot(steps, curve, label=measure)
        ax.set_ylim(-0.05, 1.05)
        _style_step_panel(ax, f"momentum, {noise:.0%} labels wrong (k = {members[0]['config']['k']})")
    axes[0, 0].set_ylabel("cosine / norm ratio (window mean)", fontsize=_FONT)
    _save(fig, path)
    plt.close(fig)
    return True
