"""Aggregates of evaluation records: means with bootstrap 95% intervals, paired comparisons."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

from sipgrad.evaluation.evaluator import BOX_METRICS, PERTURBATION_METRICS

HIGHER_IS_BETTER = {"pointing": True, "centre": True, "energy": True, "mu_in": True, "mu_in_w": True,
                    "deletion_auc": False, "deletion_aopc": True, "deletion_lerf_auc": True,
                    "insertion_auc": True, "insertion_lerf_auc": False}


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (vectorised resampling)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_comparison(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> dict[str, float]:
    """``b`` against ``a`` on the same cases: win/tie/loss rates and the Wilcoxon signed-rank p."""
    diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    if not higher_is_better:
        diff = -diff
    wins, losses = float((diff > 0).mean()), float((diff < 0).mean())
    try:
        p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    except ValueError:
        p = 1.0
    return {"win_rate": wins, "loss_rate": losses, "tie_rate": 1.0 - wins - losses,
            "mean_difference": float(diff.mean()), "wilcoxon_p": p}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per config: n and mean with 95% interval of every metric; each SIP config vs its plain method."""
    metric_names = [m for m in (*BOX_METRICS, *PERTURBATION_METRICS) if records and m in records[0]]
    by_config: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_config[record["config"]].append(record)
    configs = {}
    for key, rows in by_config.items():
        entry = {"method": rows[0]["method"], "sip": rows[0]["sip"], "n": len(rows), "metrics": {}}
        for name in metric_names:
            values = np.array([r[name] for r in rows], dtype=np.float64)
            low, high = bootstrap_interval(values)
            entry["metrics"][name] = {"mean": float(values.mean()), "low": low, "high": high}
        configs[key] = entry
    comparisons = {}
    for key, rows in by_config.items():
        method, sip = rows[0]["method"], rows[0]["sip"]
        base_key = f"{method}/none"
        if sip == "none" or base_key not in by_config:
            continue
        base = {r["case"]: r for r in by_config[base_key]}
        paired = [(base[r["case"]], r) for r in rows if r["case"] in base]
        comparisons[key] = {"against": base_key, "n": len(paired), "metrics": {
            name: paired_comparison(np.array([a[name] for a, _ in paired]), np.array([b[name] for _, b in paired]),
                                    HIGHER_IS_BETTER[name]) for name in metric_names if name != "centre"}}
    return {"configs": configs, "comparisons": comparisons, "metrics": metric_names}


def markdown(summary: dict[str, Any], title: str = "Evaluation summary") -> str:
    """The summary as Markdown tables: one row per config, then the paired comparisons."""
    names = summary["metrics"]
    lines = [f"# {title}", "", "Mean [95% bootstrap interval]. `centre` is the centre-point baseline of the "
             "pointing game.", "", "| config | n | " + " | ".join(names) + " |",
             "|" + "---|" * (len(names) + 2)]
    for key, entry in summary["configs"].items():
        cells = [f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]" for m in (entry["metrics"][n] for n in names)]
        lines.append(f"| {key} | {entry['n']} | " + " | ".join(cells) + " |")
    if summary["comparisons"]:
        lines += ["", "## SIP against the same method without SIP (paired, same cases)", "",
                  "win rate / Wilcoxon p (a win is better in the metric's own direction).", "",
                  "| config | vs | n | " + " | ".join(n for n in names if n != "centre") + " |",
                  "|" + "---|" * (len(names) + 2)]
        for key, comparison in summary["comparisons"].items():
            cells = [f"{c['win_rate']:.2f} / {c['wilcoxon_p']:.3g}" for n, c in comparison["metrics"].items()]
            lines.append(f"| {key} | {comparison['against']} | {comparison['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
