"""Bounding-box evaluation: data sets, batched metrics, a resumable runner, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sipgrad.evaluation.builtin import BUILTIN, builtin_cases
from sipgrad.evaluation.cases import Case
from sipgrad.evaluation.datasets import FORMATS, load_box_dataset
from sipgrad.evaluation.evaluator import EVALUATION_METHOD_DEFAULTS, EvalConfig, EvalSettings, Evaluator
from sipgrad.evaluation.runner import evaluate
from sipgrad.evaluation.summary import summarize


def write_reports(classifier, cases: list[Case], settings: EvalSettings, records: list[dict[str, Any]],
                  out: Path, title: str, stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """summary.json, summary.md, plots and report.html for finished records.

    ``stage`` is called with a short description before each step (for progress lines).
    """
    from sipgrad.evaluation.report import build_gallery, plot_metrics, write_html, write_summary

    say = stage or (lambda message: None)
    say("summary (bootstrap intervals, paired tests)")
    summary = write_summary(out, records, title)
    say("plots")
    plots = plot_metrics(out, summary, records) if records else []
    say("per-case thumbnails")
    gallery = build_gallery(Evaluator(classifier, settings), cases, records, maps_dir=out / "maps")
    say("report.html")
    write_html(out, summary, gallery, plots, title)
    return summary


__all__ = ["BUILTIN", "Case", "EVALUATION_METHOD_DEFAULTS", "EvalConfig", "EvalSettings", "Evaluator", "FORMATS", "builtin_cases", "evaluate",
           "load_box_dataset", "summarize", "write_reports"]
