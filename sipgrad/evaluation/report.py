"""Evaluation outputs: summary files, plots and an HTML report with a gallery."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sipgrad.evaluation.cases import Case
from sipgrad.evaluation.summary import markdown, summarize
from sipgrad.io.atomic import atomic_write
from sipgrad.render.figure import pyplot
from sipgrad.render.overlay import overlay

PLOTTED = ("pointing", "energy", "mu_in_w", "deletion_auc", "insertion_auc")


def write_summary(out: Path, records: list[dict[str, Any]], title: str) -> dict[str, Any]:
    summary = summarize(records)
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_write(out / "summary.md") as tmp:
        tmp.write_text(markdown(summary, title))
    return summary


def plot_metrics(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> list[Path]:
    """Bars with 95% intervals per metric and config; energy against box-area fraction."""
    plt = pyplot()
    names = [m for m in PLOTTED if m in summary["metrics"]]
    keys = list(summary["configs"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        stats = [summary["configs"][k]["metrics"][name] for k in keys]
        means = np.array([s["mean"] for s in stats])
        errors = np.array([[s["mean"] - s["low"] for s in stats], [s["high"] - s["mean"] for s in stats]])
        ax.bar(range(len(keys)), means, yerr=errors, capsize=3, color="#4c72b0")
        if name == "pointing":
            centre = summary["configs"][keys[0]]["metrics"]["centre"]["mean"]
            ax.axhline(centre, color="gray", linestyle="--", linewidth=1, label="centre baseline")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    paths = [out / "metrics.png"]
    with atomic_write(paths[0], suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.array([0, 0.1, 0.25, 0.5, 1.0])
    for key in keys:
        rows = [r for r in records if r["config"] == key]
        fractions = np.array([r["box_fraction"] for r in rows])
        energy = np.array([r["energy"] for r in rows])
        which = np.clip(np.digitize(fractions, bins) - 1, 0, len(bins) - 2)
        means = [energy[which == b].mean() if (which == b).any() else np.nan for b in range(len(bins) - 1)]
        ax.plot((bins[:-1] + bins[1:]) / 2, means, marker="o", label=key)
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="uniform map")
    ax.set_xlabel("box area / image area")
    ax.set_ylabel("energy inside boxes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "energy_vs_box_area.png")
    with atomic_write(paths[1], suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return paths


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode()


def gallery_tile(image: np.ndarray, saliency: np.ndarray, boxes: list) -> np.ndarray:
    """An overlay of a model input (RGB uint8) with the target boxes (input pixels) drawn in white."""
    tile = overlay(image, saliency)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(tile, (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1),
                      (255, 255, 255), 2)
    return tile


def write_html(out: Path, summary: dict[str, Any], gallery: dict[str, list[tuple[str, np.ndarray, dict]]],
               plots: list[Path], title: str) -> Path:
    """A self-contained report.html: the summary tables, the plots and the gallery."""
    table = markdown(summary, title).splitlines()
    rows_html = []
    for line in table:
        if line.startswith("|") and not line.startswith("|---"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            rows_html.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        elif line.startswith("#"):
            rows_html.append(f"</table><h2>{html.escape(line.lstrip('# '))}</h2><table>")
        elif line.strip():
            rows_html.append(f"</table><p>{html.escape(line)}</p><table>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td{border:1px solid #ccc;padding:3px 6px}figure{display:inline-block;margin:4px;font-size:11px;"
             "width:224px;vertical-align:top}</style></head><body>", "<table>", *rows_html, "</table>"]
    for plot in plots:
        parts.append(f"<p><img src='{html.escape(plot.name)}'></p>")
    for key, tiles in gallery.items():
        parts.append(f"<h2>{html.escape(key)}: best and worst cases (by energy inside boxes)</h2>")
        for label, tile, record in tiles:
            caption = (f"{label}: {html.escape(record['case'])} | {html.escape(record['target_name'])} | "
                       f"pointing {record['pointing']:.0f}, energy {record['energy']:.2f}")
            parts.append(f"<figure><img src='{_png_data_uri(tile)}'><figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>")
    path = out / "report.html"
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def build_gallery(evaluator, cases: list[Case], records: list[dict[str, Any]], per_side: int = 3):
    """Re-explain the best and worst cases of each config (by energy) and draw them with their boxes."""
    by_id = {case.case_id: case for case in cases}
    gallery = {}
    for config in evaluator.configs:
        rows = sorted((r for r in records if r["config"] == config.key and r["case"] in by_id),
                      key=lambda r: r["energy"])
        best = rows[::-1][:per_side]
        worst = [r for r in rows if r not in best][:per_side]
        chosen = [("best", r) for r in best] + [("worst", r) for r in worst]
        if not chosen:
            continue
        picked = [by_id[r["case"]] for _, r in chosen]
        inputs, _, boxes, valid = evaluator.prepare(picked)
        targets = torch.tensor([case.target for case in picked])
        maps = evaluator.explain(inputs.to(evaluator.classifier.device), targets, config).input_saliency
        pixels = evaluator.classifier.preprocessing.denormalize(inputs).clamp(0, 1)
        tiles = []
        for (label, record), saliency, image, case_boxes, case_valid in zip(chosen, maps, pixels, boxes, valid):
            rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            drawn = [b.tolist() for b, v in zip(case_boxes, case_valid) if v]
            tiles.append((label, gallery_tile(rgb, saliency.numpy(), drawn), record))
        gallery[config.key] = tiles
    return gallery
