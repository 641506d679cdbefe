"""Aggregates of evaluation records: means with bootstrap 95% intervals, paired comparisons.

What each metric means and which way is better comes from ``catalog.METRICS``; this module
only aggregates. Records carrying an ``"error"`` (a case that could not be evaluated) are
counted as skipped, never averaged.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from sipgrad.evaluation.catalog import METRICS

# Resampled means are drawn in blocks of at most this many indices, so a 50 000-case run does
# not allocate resamples x cases integers at once.
_BOOTSTRAP_BLOCK = 4_000_000


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (vectorised resampling, reproducible from ``seed``).

    Fewer than 2 values have no interval (NaN, shown as n/a): resampling one value would give a
    zero-width interval that reads as certainty.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK // len(values))
    means = np.concatenate([values[rng.integers(0, len(values), (min(block, resamples - start), len(values)))]
                            .mean(axis=1) for start in range(0, resamples, block)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def rank_biserial(improvements: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired improvements, in [-1, 1].

    The effect size that goes with the Wilcoxon signed-rank test: (R+ - R-) / (R+ + R-) over
    the ranks of |difference| (zero differences dropped, ties get mean ranks). +1: every
    non-zero pair improved; -1: every one got worse; 0 also when all pairs are tied.
    """
    from scipy import stats  # here, not at import: scipy.stats costs every sipgrad process ~60 MiB

    nonzero = np.asarray(improvements, np.float64)
    nonzero = nonzero[nonzero != 0]
    if not len(nonzero):
        return 0.0
    ranks = stats.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def paired_comparison(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> dict[str, Any]:
    """``b`` against ``a`` on the same cases.

    ``mean_difference`` (with its bootstrap interval) is the plain b - a in the metric's
    units; wins, losses, the Wilcoxon signed-rank p and the rank-biserial effect size are
    in the metric's own direction (a win and a positive effect mean ``b`` is better).
    ``identical`` is true when every pair is equal (then p is 1 and the effect 0).
    """
    difference = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    improvement = difference if higher_is_better else -difference
    wins, losses, ties = (float((improvement > 0).mean()), float((improvement < 0).mean()),
                          float((improvement == 0).mean()))
    identical = not np.any(difference != 0)
    p = 1.0
    if not identical:
        from scipy import stats

        with warnings.catch_warnings():  # scipy warns about ties and small samples; p is still defined
            warnings.simplefilter("ignore")
            try:
                p = _signed_rank_p(improvement, stats)
            except ValueError:
                p = 1.0
        p = 1.0 if math.isnan(p) else p
    low, high = bootstrap_interval(difference)
    return {"win_rate": wins, "loss_rate": losses, "tie_rate": ties,
            "mean_difference": float(difference.mean()), "difference_low": low, "difference_high": high,
            "wilcoxon_p": p, "effect_size": rank_biserial(improvement), "identical": bool(identical)}


def _signed_rank_p(improvement: np.ndarray, stats) -> float:
    """Two-sided Wilcoxon signed-rank p, zero differences dropped (Wilcoxon's convention), exact for small samples.

    scipy's default switches to the normal approximation as soon as one pair ties, which on a 0/1
    metric (pointing: most pairs tied) gives p far too small (5 wins of 5 untied pairs: 0.025, where
    the exact p is 0.0625). Up to 50 untied pairs the p is exact: where every untied difference has
    the same size (a 0/1 metric) the ranks all tie and the test is the sign test (binomial);
    otherwise scipy's exact signed-rank distribution. Above 50, the normal approximation.
    """
    untied = improvement[improvement != 0]
    if len(untied) > 50:
        return float(stats.wilcoxon(improvement).pvalue)
    if np.all(np.abs(untied) == np.abs(untied[0])):
        return float(stats.binomtest(int((untied > 0).sum()), len(untied), 0.5).pvalue)
    return float(stats.wilcoxon(improvement, method="exact").pvalue)


def scored_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that hold scores (failed cases carry an ``"error"`` instead)."""
    return [r for r in records if "error" not in r]


def equal_metrics(records: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, str]:
    """``{metric: same_as}`` for catalog pairs that are equal on every record.

    ``mu_in`` (share of |map| in the boxes) equals ``energy`` (share of the positive part)
    whenever maps are non-negative, as every map sipgrad makes today; showing both would
    only repeat a column. Signed maps make them differ, and then both are shown.
    """
    same = {}
    for name in names:
        other = METRICS[name].same_as
        if other is None or other not in names or not records:
            continue
        left = np.array([r[name] for r in records], np.float64)
        right = np.array([r[other] for r in records], np.float64)
        if np.allclose(left, right, rtol=1e-5, atol=1e-6):
            same[name] = other
    return same


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per config: n and mean with 95% interval of every metric; each SIP config vs its plain method.

    Keys: ``configs`` (per config: method, sip, n, metrics), ``comparisons`` (per SIP config:
    against, n, metrics), ``metrics`` (the names present, catalog order), ``same_as``
    (metrics equal to another on every record, see ``equal_metrics``) and ``skipped``
    (one entry per case that failed, with its error).
    """
    scored = scored_records(records)
    metric_names = [name for name in METRICS if scored and name in scored[0]]
    by_config: dict[str, list[dict]] = defaultdict(list)
    for record in scored:
        by_config[record["config"]].append(record)
    configs = {}
    for key, rows in by_config.items():
        entry = {"method": rows[0]["method"], "sip": rows[0]["sip"], "n": len(rows), "metrics": {}}
        for name in metric_names:
            values = np.array([r[name] for r in rows], dtype=np.float64)
            low, high = bootstrap_interval(values)
            entry["metrics"][name] = {"mean": float(values.mean()), "low": low, "high": high}
        configs[key] = entry
    compared = [name for name in metric_names if METRICS[name].baseline_of is None]
    comparisons = {}
    for key, rows in by_config.items():
        method, sip = rows[0]["method"], rows[0]["sip"]
        base_key = f"{method}/none"
        if sip == "none" or base_key not in by_config:
            continue
        base = {r["case"]: r for r in by_config[base_key]}
        paired = [(base[r["case"]], r) for r in rows if r["case"] in base]
        if not paired:  # no case scored under both (e.g. every one failed in one of them)
            continue
        comparisons[key] = {"against": base_key, "n": len(paired), "metrics": {
            name: paired_comparison(np.array([a[name] for a, _ in paired]), np.array([b[name] for _, b in paired]),
                                    METRICS[name].higher_is_better) for name in compared}}
    skipped: dict[str, str] = {}
    for record in records:
        if "error" in record:
            skipped.setdefault(record.get("case", "?"), str(record["error"]))
    return {"configs": configs, "comparisons": comparisons, "metrics": metric_names,
            "same_as": equal_metrics(scored, metric_names),
            "skipped": [{"case": case, "error": error} for case, error in skipped.items()]}


def shown_metrics(summary: dict[str, Any]) -> list[str]:
    """The metrics a reader needs to see: without baselines and without columns equal to another."""
    same = summary.get("same_as", {})
    return [name for name in summary["metrics"] if METRICS[name].baseline_of is None and name not in same]


def decimals_for(values: Sequence[float]) -> int:
    """2 decimals, or 3 when every value is below 0.1 in size (small AUCs would read as 0.0x)."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    return 3 if finite and max(finite) < 0.1 else 2


def format_number(value: float, decimals: int = 2, signed: bool = False) -> str:
    """``0.52``, or ``+0.52``/``-0.52`` (a true minus sign) when ``signed``."""
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    if signed and float(text) == 0:
        text = f"{0:.{decimals}f}"  # no "+0.00" or "-0.00"
    return text.replace("-", "\u2212")


def format_interval(mean: float, low: float, high: float, decimals: int = 2, signed: bool = False) -> str:
    """``0.52 [0.48, 0.57]``: a mean and its 95% interval."""
    return (f"{format_number(mean, decimals, signed)} "
            f"[{format_number(low, decimals, signed)}, {format_number(high, decimals, signed)}]")


def format_p(p: float) -> str:
    """A p-value with two significant digits; below 0.001 as ``<0.001``."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def markdown(summary: dict[str, Any], title: str = "Evaluation summary") -> str:
    """The summary as Markdown tables: one row per config, then the paired comparisons."""
    names = shown_metrics(summary)
    configs = summary["configs"]
    lines = [f"# {title}", "", "Mean [95% bootstrap interval]; arrows give the better direction."]
    centre = next(iter(configs.values()))["metrics"].get("centre") if configs else None
    if centre:
        lines.append(f"Pointing at the image centre scores {format_interval(**centre)} (the baseline to beat).")
    for name, other in summary.get("same_as", {}).items():
        lines.append(f"{name} equals {other} on every record (the maps are non-negative), so it is shown once.")
    if configs:
        lines += ["", "| config | n | " + " | ".join(f"{n} {METRICS[n].arrow}" for n in names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
    else:
        lines += ["", "No case could be evaluated."]
    places = {n: decimals_for([e["metrics"][n]["mean"] for e in configs.values()]) for n in names}
    for key, entry in configs.items():
        cells = [format_interval(**entry["metrics"][n], decimals=places[n]) for n in names]
        lines.append(f"| {key} | {entry['n']} | " + " | ".join(cells) + " |")
    if summary["comparisons"]:
        lines += ["", "## SIP against the same method without SIP (paired, same cases)", "",
                  "Difference SIP - plain [95% interval]; wins/ties/losses and the rank-biserial effect r "
                  "in the metric's better direction; Wilcoxon signed-rank p.", "",
                  "| config | vs | n | metric | difference | wins/ties/losses | p | r |",
                  "|---|---|---:|---|---:|---:|---:|---:|"]
        for key, comparison in summary["comparisons"].items():
            head = f"| {key} | {comparison['against']} | {comparison['n']} |"
            chosen = {n: c for n, c in comparison["metrics"].items() if n in names}
            if all(c["identical"] for c in chosen.values()):
                lines.append(f"{head} all | identical on every case | | | |")
                continue
            for name, c in chosen.items():
                lines.append(f"{head} {name} | "
                             f"{format_interval(c['mean_difference'], c['difference_low'], c['difference_high'], places[name], True)}"
                             f" | {c['win_rate']:.0%}/{c['tie_rate']:.0%}/{c['loss_rate']:.0%} | "
                             f"{format_p(c['wilcoxon_p'])} | {format_number(c['effect_size'], 2, True)} |")
    if summary.get("skipped"):
        lines += ["", f"## Skipped: {len(summary['skipped'])} case(s)", ""]
        lines += [f"- {s['case']}: {s['error']}" for s in summary["skipped"]]
    return "\n".join(lines) + "\n"
