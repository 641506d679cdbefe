"""Evaluation outputs a person reads: summary files, plots, and one self-contained report.html.

The report carries everything inside the file (plots and thumbnails as base64 data URIs, a
small stylesheet), so it can be mailed or archived alone. Metric names, directions and
ranges come from ``catalog.METRICS``; numbers from ``summary.summarize``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sipgrad.errors import SipgradError
from sipgrad.evaluation.cases import Case
from sipgrad.evaluation.catalog import METRICS
from sipgrad.evaluation.summary import (decimals_for, format_interval, format_number, format_p, markdown,
                                        scored_records, shown_metrics, summarize)
from sipgrad.io.atomic import atomic_write, write_json
from sipgrad.io.names import case_file
from sipgrad.render.figure import pyplot
from sipgrad.render.overlay import heatmap, overlay
from sipgrad.render.styles import READABLE_FONTS, series_styles

PLOT_WIDTH_INCHES = 7.2  # 720 px at 100 dpi: fits an 800-px window without scaling the labels down
THUMBNAIL_PX = 144  # shown this wide; stored 1.5x as wide (sharper on high-DPI screens, a third of 2x's bytes)
THUMBNAIL_STORED_PX = 216
SIGNIFICANCE = 0.05
PLOT_CAPTIONS = {
    "metrics.png": "metrics.png: each config's mean and 95% interval, one panel per metric.",
    "energy_vs_box_area.png": "energy_vs_box_area.png: energy inside the boxes by the boxes' share of the image; "
                              "each point is a group of cases (n of them) at their mean box share. "
                              "The dotted diagonal is what a uniform map scores; above it, the map concentrates "
                              "on the object.",
}


def write_summary(out: Path, records: list[dict[str, Any]], title: str) -> dict[str, Any]:
    summary = summarize(records)
    write_json(out / "summary.json", summary)
    with atomic_write(out / "summary.md") as tmp:
        tmp.write_text(markdown(summary, title))
    return summary


def _config_styles(summary: dict[str, Any]):
    keys = list(summary["configs"])
    pairs = [(summary["configs"][k]["method"], summary["configs"][k]["sip"]) for k in keys]
    styles = series_styles(pairs)
    return {key: styles[pair] for key, pair in zip(keys, pairs)}


def _save_figure(fig, path: Path) -> None:
    with atomic_write(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def plot_metrics(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> list[Path]:
    """Write ``metrics.png`` (see ``metrics_figure``) and ``energy_vs_box_area.png`` (see
    ``energy_figure``) into ``out``; returns their paths (none when no case was scored)."""
    if not summary["configs"]:
        return []
    plt = pyplot()
    paths = []
    for name, figure in (("metrics.png", lambda: metrics_figure(summary)),
                         ("energy_vs_box_area.png", lambda: energy_figure(summary, records))):
        fig = figure()
        paths.append(Path(out) / name)
        _save_figure(fig, paths[-1])
        plt.close(fig)
    return paths


def metrics_figure(summary: dict[str, Any]):
    """One panel per shown metric: each config's mean with its 95% interval.

    The configs share one vertical axis (first on top), so every config has its own row and no
    two intervals hide each other; colour says the method, marker and shade the SIP setting.
    """
    plt = pyplot()
    keys = list(summary["configs"])
    names = shown_metrics(summary)
    styles = _config_styles(summary)
    with plt.rc_context(READABLE_FONTS):
        columns = 2 if len(names) > 1 else 1
        rows = max(1, -(-len(names) // columns))
        panel_height = 0.9 + 0.24 * len(keys)
        fig, axes = plt.subplots(rows, columns, figsize=(PLOT_WIDTH_INCHES, panel_height * rows + 0.4),
                                 sharey=True, squeeze=False)
        positions = np.arange(len(keys))[::-1]
        has_centre = "pointing" in names and "centre" in summary["metrics"]
        for ax, name in zip(axes.flat, names):
            entry = METRICS[name]
            for y, key in zip(positions, keys):
                stats = summary["configs"][key]["metrics"][name]
                ax.errorbar(stats["mean"], y, xerr=[[stats["mean"] - stats["low"]], [stats["high"] - stats["mean"]]],
                            color=styles[key].color, marker=styles[key].marker, markersize=6, capsize=3,
                            linestyle="none")
            if name == "pointing" and has_centre:
                ax.axvline(summary["configs"][keys[0]]["metrics"]["centre"]["mean"], color="0.4", linestyle="--",
                           linewidth=1)
            low, high = entry.range
            if np.isfinite(low) and np.isfinite(high):
                ax.set_xlim(low - 0.03 * (high - low), high + 0.03 * (high - low))
            ax.set_title(f"{entry.label} {entry.arrow}", loc="left")
            ax.grid(axis="x", alpha=0.3)
            ax.set_yticks(positions, keys)
            ax.set_ylim(-0.7, len(keys) - 0.3)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        note = "mean over cases with 95% bootstrap interval; \u2191 higher is better, \u2193 lower is better"
        if has_centre:
            note += ";\ndashed line: pointing at the image centre (the pointing game's baseline)"
        fig.supxlabel(note, fontsize=10)
        fig.tight_layout()
    return fig


def energy_figure(summary: dict[str, Any], records: list[dict[str, Any]]):
    """Energy inside the boxes against the boxes' share of the image, as small multiples: one
    panel per method, one line per SIP setting (own shade, marker and dash; open markers, so
    equal values stay visible one over the other). The dotted diagonal is what a uniform map scores.

    The cases are grouped by box share; each point sits at the *mean box share* of its group's
    cases (their number is written under it), not at the group's middle: a uniform map's mean
    energy equals that mean share, so only then does "above the diagonal" mean "better than
    uniform" (a group of boxes at 0.50-1.00 with mean 0.57 was drawn at 0.75, under the line).
    """
    plt = pyplot()
    configs = summary["configs"]
    records = scored_records(records)
    styles = _config_styles(summary)
    methods = list(dict.fromkeys(entry["method"] for entry in configs.values())) or ["(no records)"]
    with plt.rc_context(READABLE_FONTS):
        columns = min(len(methods), 2)
        rows = -(-len(methods) // columns)
        # The legend goes under each panel, where it cannot cover a line.
        fig, axes = plt.subplots(rows, columns, figsize=(PLOT_WIDTH_INCHES, 4.2 * rows), sharey=True,
                                 squeeze=False, layout="constrained")
        for ax, method in zip(axes.flat, methods):
            keys = [k for k, entry in configs.items() if entry["method"] == method]
            counts: dict[float, int] = {}
            for key in keys:
                shares, means, sizes = energy_by_box_share([r for r in records if r["config"] == key])
                ax.plot(shares, means, label=configs[key]["sip"], markersize=7, linewidth=1.5,
                        markerfacecolor="none", markeredgewidth=1.5, **styles[key].kwargs())
                for share, size in zip(shares, sizes):
                    counts[round(float(share), 3)] = max(counts.get(round(float(share), 3), 0), int(size))
            # The group sizes along the top edge, outside the data, where they cannot hide a point.
            top = ax.secondary_xaxis("top")
            # Groups whose mean shares are close get their labels on alternate lines, not on top of each other.
            labels, previous, raised = [], -1.0, False
            for share, size in sorted(counts.items()):
                raised = share - previous < 0.12 and not raised
                labels.append(("n=%d\n" if raised else "n=%d") % size)
                previous = share
            top.set_xticks(sorted(counts), labels, color="0.35")
            top.tick_params(length=3)
            ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1, label="uniform map")
            ax.set_title(method, loc="left")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("box area / image area")
            ax.grid(alpha=0.3)
            ax.legend(title="SIP", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        for ax in axes[:, 0]:
            ax.set_ylabel("energy inside boxes")
        for ax in list(axes.flat)[len(methods):]:
            ax.axis("off")
    return fig


ENERGY_BINS = (0.0, 0.1, 0.25, 0.5, 1.0)  # box share of the image: small, medium, large, most of it


def energy_by_box_share(records: list[dict[str, Any]],
                        bins: Sequence[float] = ENERGY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scored cases grouped by box share (``bins``): per non-empty group, the mean box share of its
    cases, their mean energy inside the boxes, and their number (three arrays, in bin order)."""
    edges = np.asarray(bins, dtype=np.float64)
    fractions = np.array([r["box_fraction"] for r in records], dtype=np.float64)
    energy = np.array([r["energy"] for r in records], dtype=np.float64)
    which = np.clip(np.digitize(fractions, edges) - 1, 0, len(edges) - 2)
    groups = [which == b for b in range(len(edges) - 1) if (which == b).any()]
    return (np.array([fractions[g].mean() for g in groups]), np.array([energy[g].mean() for g in groups]),
            np.array([int(g.sum()) for g in groups]))


# ---------------------------------------------------------------------------------------------
# Per-case thumbnails


@dataclass
class GalleryCase:
    """One case of the gallery: the model input with its boxes, then one overlay per config."""

    case_id: str
    target_name: str
    image: np.ndarray  # RGB uint8, boxes drawn
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # config -> RGB uint8 overlay, boxes drawn
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # config -> its record


@dataclass
class Gallery:
    """The cases shown, why these were chosen, and where the maps came from."""

    configs: list[str]
    cases: list[GalleryCase]
    chosen_because: str
    source: str  # where the maps came from: "read from maps/" or "recomputed"
    missing: list[str] = field(default_factory=list)  # cases that could not be shown, with the reason


def _draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[float]], thickness: int = 2) -> np.ndarray:
    tile = np.ascontiguousarray(rgb).copy()
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(tile, (round(x0), round(y0)), (round(x1) - 1, round(y1) - 1),
                      (255, 255, 255), thickness)
    return tile


def gallery_tile(image: np.ndarray, saliency: np.ndarray, boxes: list) -> np.ndarray:
    """An overlay of a model input (RGB uint8) with the target boxes (input pixels) drawn in white."""
    return _draw_boxes(overlay(image, saliency), boxes)


def choose_cases(records: list[dict[str, Any]], limit: int) -> tuple[list[str], str]:
    """Up to ``limit`` case ids in data set order, and why they were chosen.

    All cases when they fit; otherwise those where the configs disagree most (largest spread of
    energy inside the boxes), since that is where the maps are worth comparing by eye.
    """
    by_case: dict[str, list[float]] = {}
    for record in scored_records(records):
        by_case.setdefault(record["case"], []).append(record["energy"])
    order = list(by_case)
    if len(order) <= limit:
        return order, "every case"
    spread = {case: max(values) - min(values) for case, values in by_case.items()}
    chosen = set(sorted(order, key=lambda c: (-spread[c], order.index(c)))[:limit])
    return [c for c in order if c in chosen], (f"the {limit} of {len(order)} cases where the configs disagree most "
                                               "(largest spread of energy inside the boxes)")


def build_gallery(evaluator, cases: list[Case], records: list[dict[str, Any]], max_cases: int = 12,
                  maps_dir: Path | None = None) -> Gallery:
    """Thumbnails of up to ``max_cases`` cases: the input with its boxes, then each config's map.

    Maps are read from ``maps_dir`` (``evaluate(..., save_maps=True)`` writes
    ``maps/CONFIG/CASE.npy``) where present, and recomputed otherwise. A case whose image
    can no longer be read is listed in ``Gallery.missing`` instead of stopping the report.
    """
    keys = [config.key for config in evaluator.configs]
    chosen, because = choose_cases(records, max_cases)
    by_id = {case.case_id: case for case in cases}
    by_pair = {(r["case"], r["config"]): r for r in scored_records(records)}
    gallery = Gallery(keys, [], because, "saved maps")
    known = [by_id[case_id] for case_id in chosen if case_id in by_id]
    gallery.missing += [f"{case_id}: not among the cases given" for case_id in chosen if case_id not in by_id]
    prepared = evaluator.prepare(known)
    gallery.missing += [f"{case_id}: {error}" for case_id, error in prepared.failed.items()]
    if not prepared.cases:
        return gallery
    pixels = evaluator.classifier.preprocessing.denormalize(prepared.inputs).clamp(0, 1)
    images = [(image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for image in pixels]
    boxes = [[b.tolist() for b, v in zip(case_boxes, case_valid) if v]
             for case_boxes, case_valid in zip(prepared.boxes, prepared.valid)]
    maps = {key: [_saved_map(maps_dir, key, case.case_id) for case in prepared.cases] for key in keys}
    recomputed = False
    for config in evaluator.configs:
        if any(m is None for m in maps[config.key]):
            computed = evaluator.maps(prepared, config)
            maps[config.key] = [m.cpu().numpy() for m in computed]
            recomputed = True
    gallery.source = "recomputed" if recomputed else f"read from {Path(maps_dir).name}/"
    for i, case in enumerate(prepared.cases):
        entry = GalleryCase(case.case_id, evaluator.classifier.classes[case.target], _draw_boxes(images[i], boxes[i]))
        for key in keys:
            entry.maps[key] = gallery_tile(images[i], maps[key][i], boxes[i])
            if (case.case_id, key) in by_pair:
                entry.records[key] = by_pair[(case.case_id, key)]
        gallery.cases.append(entry)
    return gallery


def _saved_map(maps_dir: Path | None, config: str, case_id: str) -> np.ndarray | None:
    if maps_dir is None:
        return None
    path = case_file(maps_dir, config, case_id, ".npy")
    try:
        return np.load(path, allow_pickle=False) if path.is_file() else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# HTML


def image_data_uri(rgb: np.ndarray, size: int | None = None, fmt: str = "jpeg") -> str:
    """An RGB uint8 image as a base64 data URI (JPEG for photos, PNG for sharp graphics),
    scaled so its longer side is ``size`` px when given."""
    if size is not None and max(rgb.shape[:2]) != size:
        scale = size / max(rgb.shape[:2])
        shape = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, shape, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", bgr, params)
    if not ok:
        raise SipgradError(f"could not encode a {fmt} image")
    return f"data:image/{fmt};base64," + base64.b64encode(encoded.tobytes()).decode()


def _file_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


_STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
 margin:0 auto;padding:0 16px 48px;max-width:1120px;overflow-wrap:anywhere}
h1{font-size:24px;margin:20px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}
.meta,.note{color:#555;font-size:14px}
.how{background:#f5f7fa;border:1px solid #dde3ea;border-radius:6px;padding:8px 16px;font-size:14px}
.how li{margin:3px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px;max-width:100%;overflow-wrap:normal}
/* a table wider than a narrow window scrolls inside its box; the page itself never does */
.table-scroll{overflow-x:auto;max-width:100%;margin:8px 0}.table-scroll table{margin:0}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;vertical-align:top}
th{text-align:left;background:#fafafa;font-weight:600}
thead th{border-bottom:2px solid #bbb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num .ci{color:#666;white-space:nowrap}
td.num .mean{white-space:nowrap}
td.num.nowrap,th.config,td.metric{white-space:nowrap}
td.best{background:#e3f4e6;font-weight:700}
td.best .mean::after{content:" \\2605";color:#1e7b34}
td.better{color:#1e7b34}td.worse{color:#b3261e}
tr.group th{background:#eef2f6}
.plot{margin:12px 0}.plot img{max-width:100%;height:auto;display:block}
.case,.case .method{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:6px}
.case .method{margin-bottom:0}
.case figure{margin:0;width:%(thumb)dpx;font-size:12px;line-height:1.3}
.case img{width:%(thumb)dpx;height:auto;display:block;border-radius:2px}
.case figcaption{padding-top:2px}
.colorbar{display:flex;align-items:center;gap:8px;font-size:13px;color:#444;flex-wrap:wrap}
.colorbar img{height:12px;width:220px}
dl.metrics dt{font-weight:600;margin-top:6px}dl.metrics dd{margin-left:16px}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;background:#f2f2f2;padding:0 3px}
""".replace("%(thumb)d", str(THUMBNAIL_PX))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _interval_cell(stats: dict[str, float], decimals: int, best: bool) -> str:
    text = format_interval(stats["mean"], stats["low"], stats["high"], decimals)
    mean, interval = text.split(" ", 1)
    css = "num best" if best else "num"
    title = " title='best mean in this column'" if best else ""
    return f"<td class='{css}'{title}><span class='mean'>{mean}</span> <span class='ci'>{interval}</span></td>"


def _metric_header(name: str) -> str:
    entry = METRICS[name]
    better = "higher" if entry.higher_is_better else "lower"
    return f"<th class='num' title='{_e(entry.description)}; {better} is better'>{_e(entry.label)} {entry.arrow}</th>"


def _metrics_table(summary: dict[str, Any], names: list[str]) -> str:
    """One row per config; the best mean of each column (in the catalog's direction) is marked."""
    configs = summary["configs"]
    rows = ["<div class='table-scroll'><table class='metrics'><thead><tr><th>config</th><th class='num'>n</th>",
            *[_metric_header(n) for n in names], "</tr></thead><tbody>"]
    places = {n: decimals_for([e["metrics"][n]["mean"] for e in configs.values()]) for n in names}
    best = {}
    for n in names:
        # Compare the means as printed: configs that print the same are tied for best.
        printed = {k: round(e["metrics"][n]["mean"], places[n]) for k, e in configs.items()}
        best[n] = METRICS[n].best(list(printed.values()))
        best[n] = {k for k, v in printed.items() if v == best[n]}
    for key, entry in configs.items():
        cells = "".join(_interval_cell(entry["metrics"][n], places[n], key in best[n]) for n in names)
        rows.append(f"<tr><th class='config'>{_e(key)}</th><td class='num nowrap'>{entry['n']}</td>{cells}</tr>")
    if "pointing" in names and "centre" in summary["metrics"] and configs:
        centre = next(iter(configs.values()))["metrics"]["centre"]
        cells = "".join(_interval_cell(centre, places[n], False) if n == "pointing" else "<td></td>" for n in names)
        rows.append(f"<tr class='baseline'><th>pointing at the centre (baseline)</th><td></td>{cells}</tr>")
    rows.append("</tbody></table></div>")
    return "".join(rows)


def _comparison_table(summary: dict[str, Any], names: list[str]) -> str:
    """Per SIP config, one row per metric: the paired difference, wins, p and effect size."""
    configs = summary["configs"]
    places = {n: decimals_for([e["metrics"][n]["mean"] for e in configs.values()]) for n in names}
    rows = ["<div class='table-scroll'><table class='comparisons'><thead><tr><th>metric</th>"
            "<th class='num'>difference SIP \u2212 plain [95% interval]</th>"
            "<th class='num'>wins / ties / losses (%)</th><th class='num'>p (Wilcoxon)</th>"
            "<th class='num'>effect r</th><th>reading</th></tr></thead><tbody>"]
    for key, comparison in summary["comparisons"].items():
        chosen = {n: c for n, c in comparison["metrics"].items() if n in names}
        rows.append(f"<tr class='group'><th colspan='6'>{_e(key)} against {_e(comparison['against'])}, "
                    f"{comparison['n']} paired cases</th></tr>")
        if chosen and all(c["identical"] for c in chosen.values()):
            rows.append(f"<tr><td colspan='6'>Identical to {_e(comparison['against'])} on every case and metric: "
                        "SIP did not change these maps.</td></tr>")
            continue
        for name, c in chosen.items():
            entry = METRICS[name]
            if c["identical"]:
                rows.append(f"<tr><td class='metric'>{_e(entry.label)} {entry.arrow}</td><td class='num'>identical</td>"
                            "<td></td><td></td><td></td><td>no change</td></tr>")
                continue
            difference = format_interval(c["mean_difference"], c["difference_low"], c["difference_high"],
                                         places[name], signed=True)
            mean, interval = difference.split(" ", 1)
            significant = c["wilcoxon_p"] < SIGNIFICANCE
            reading, css = ("better with SIP", "better") if significant and c["effect_size"] > 0 else \
                ("worse with SIP", "worse") if significant and c["effect_size"] < 0 else ("no clear difference", "")
            rows.append(f"<tr><td class='metric'>{_e(entry.label)} {entry.arrow}</td>"
                        f"<td class='num'><span class='mean'>{mean}</span> <span class='ci'>{interval}</span></td>"
                        f"<td class='num nowrap'>{100 * c['win_rate']:.0f} / {100 * c['tie_rate']:.0f} / "
                        f"{100 * c['loss_rate']:.0f}</td>"
                        f"<td class='num nowrap'>{format_p(c['wilcoxon_p'])}</td>"
                        f"<td class='num nowrap'>{format_number(c['effect_size'], 2, signed=True)}</td>"
                        f"<td class='{css}'>{reading}</td></tr>")
    rows.append("</tbody></table></div>")
    return "".join(rows)


def _how_to_read(summary: dict[str, Any]) -> str:
    items = [
        "Each number is a mean over cases with its 95% bootstrap interval: <b>0.52 [0.48, 0.57]</b>. "
        "Overlapping intervals alone do not mean two configs are alike; the paired comparison below is the test.",
        "Arrows give the better direction of each metric (\u2191 higher is better, \u2193 lower is better); "
        "the best mean of each column is shaded green and starred (\u2605); equal printed means share the mark.",
        "The pointing game only counts when it beats the <i>centre baseline</i>: pointing at the image centre "
        "every time.",
        "SIP against plain: the same cases explained with and without SIP. The difference is SIP \u2212 plain in "
        "the metric's units; wins, the Wilcoxon signed-rank p and the rank-biserial effect r (from \u22121 to +1) "
        f"count in the metric's better direction, so r &gt; 0 favours SIP. 'better'/'worse' means p &lt; "
        f"{SIGNIFICANCE} for that one test, not corrected for the number of tests on this page.",
        "Thumbnails: the model input with the target boxes in white, then each config's map over it (red = "
        "strongest, each map scaled to its own 99th percentile, or its maximum where that is 0). Captions give that case's energy inside the "
        "boxes and whether the pointing game hit.",
    ]
    for name, other in summary.get("same_as", {}).items():
        items.append(f"<code>{_e(name)}</code> is not shown: it equals <code>{_e(other)}</code> on every record. "
                     f"{_e(METRICS[name].label)} is the share of |map| inside the boxes and {_e(METRICS[other].label)} "
                     "the share of the positive part; for non-negative maps (every map here) they are the same.")
    return "<section class='how'><h2>How to read this</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + \
        "</ul></section>"


def _colorbar_uri() -> str:
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (8, 1))
    return image_data_uri(heatmap(ramp, clip_percentile=100), fmt="png")


def _gallery_html(gallery: Gallery | None) -> str:
    if gallery is None or not gallery.cases:
        reason = "no maps could be produced" if gallery is None else "; ".join(gallery.missing) or "no cases"
        return f"<h2>Cases</h2><p class='note'>No thumbnails: {_e(reason)}.</p>"
    parts = [f"<h2>Cases</h2><p class='note'>Showing {_e(gallery.chosen_because)}; maps {_e(gallery.source)}.</p>",
             "<div class='colorbar'><span>map: low</span>"
             f"<img src='{_colorbar_uri()}' alt='colour scale from low (blue) to high (red)'>"
             "<span>high (each map scaled to its 99th percentile, or its maximum where that is 0)</span></div>"]
    for case in gallery.cases:
        parts.append(f"<h3>{_e(case.case_id)} \u2014 target <i>{_e(case.target_name)}</i></h3><div class='case'>")
        parts.append(f"<figure><img src='{image_data_uri(case.image, THUMBNAIL_STORED_PX)}' alt='{_e(case.case_id)}'>"
                     "<figcaption>input and boxes</figcaption></figure>")
        # One group per method, so a method's SIP settings stay side by side when the row wraps.
        methods = dict.fromkeys(key.split("/", 1)[0] for key in gallery.configs)
        for method in methods:
            parts.append("<div class='method'>")
            for key in (k for k in gallery.configs if k.split("/", 1)[0] == method):
                record = case.records.get(key)
                caption = _e(key)
                if record is not None:
                    hit = "hit" if record["pointing"] >= 0.5 else "miss"
                    caption += f"<br>energy {record['energy']:.2f} \u00b7 {hit}"
                parts.append(f"<figure><img src='{image_data_uri(case.maps[key], THUMBNAIL_STORED_PX)}' "
                             f"alt='{_e(key)} map of {_e(case.case_id)}'><figcaption>{caption}</figcaption></figure>")
            parts.append("</div>")
        parts.append("</div>")
    if gallery.missing:
        parts.append("<p class='note'>Not shown: " + "; ".join(_e(m) for m in gallery.missing) + "</p>")
    return "".join(parts)


def _definitions(summary: dict[str, Any]) -> str:
    items = []
    for name in summary["metrics"]:
        entry = METRICS[name]
        low, high = entry.range
        span = f"{format_number(low, 0)} to " + ("\u221e" if high == float("inf") else format_number(high, 0))
        better = "higher" if entry.higher_is_better else "lower"
        sentence = entry.description[:1].upper() + entry.description[1:]
        items.append(f"<dt>{_e(entry.label)} <code>{_e(name)}</code></dt><dd>{_e(sentence)}. "
                     f"Range {span}; {better} is better.</dd>")
    return "<h2>Metrics</h2><dl class='metrics'>" + "".join(items) + "</dl>"


def render_html(summary: dict[str, Any], gallery: Gallery | None, plots: Sequence[Path], title: str) -> str:
    """The report as one HTML string (everything embedded)."""
    configs = summary["configs"]
    names = shown_metrics(summary)
    cases = max((entry["n"] for entry in configs.values()), default=0)
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class='meta'>{cases} case(s) \u00b7 {len(configs)} config(s): "
             f"{_e(', '.join(configs))}</p>"]
    if summary.get("skipped"):
        parts.append(f"<p class='note'><b>{len(summary['skipped'])} case(s) skipped</b> (not in any number below): "
                     + "; ".join(f"{_e(s['case'])}: {_e(s['error'])}" for s in summary["skipped"]) + "</p>")
    parts.append(_how_to_read(summary))
    for family, heading in (("box", "Against the boxes"), ("perturbation", "Deletion and insertion")):
        chosen = [n for n in names if METRICS[n].family == family]
        if chosen:
            parts.append(f"<h2>{heading}</h2>{_metrics_table(summary, chosen)}")
    if summary["comparisons"]:
        parts.append(f"<h2>SIP against the same method without SIP</h2>{_comparison_table(summary, names)}")
    if plots:
        parts.append("<h2>Plots</h2>")
        for plot in plots:
            parts.append(f"<figure class='plot'><img src='{_file_data_uri(plot)}' alt='{_e(plot.stem)}'>"
                         f"<figcaption class='note'>{_e(PLOT_CAPTIONS.get(plot.name, plot.name))}</figcaption></figure>")
    parts.append(_gallery_html(gallery))
    parts.append(_definitions(summary))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(out: Path, summary: dict[str, Any], gallery: Gallery | None, plots: list[Path], title: str) -> Path:
    """Write the self-contained ``report.html`` (see ``render_html``)."""
    path = Path(out) / "report.html"
    with atomic_write(path) as tmp:
        tmp.write_text(render_html(summary, gallery, plots, title), encoding="utf-8")
    return path
