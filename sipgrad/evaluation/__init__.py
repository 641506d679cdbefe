"""Bounding-box evaluation: data sets, batched metrics, a resumable runner, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sipgrad.evaluation.builtin import BUILTIN, builtin_cases
from sipgrad.evaluation.cases import Case
from sipgrad.evaluation.datasets import FORMATS, load_dataset
from sipgrad.evaluation.evaluator import EvalConfig, EvalSettings, Evaluator
from sipgrad.evaluation.runner import evaluate
from sipgrad.evaluation.summary import summarize


def write_reports(classifier, cases: list[Case], settings: EvalSettings, records: list[dict[str, Any]],
                  out: Path, title: str) -> dict[str, Any]:
    """summary.json, summary.md, plots and report.html for finished records."""
    from sipgrad.evaluation.report import build_gallery, plot_metrics, write_html, write_summary

    summary = write_summary(out, records, title)
    plots = plot_metrics(out, summary, records) if records else []
    gallery = build_gallery(Evaluator(classifier, settings), cases, records, maps_dir=out / "maps")
    write_html(out, summary, gallery, plots, title)
    return summary


__all__ = ["BUILTIN", "Case", "EvalConfig", "EvalSettings", "Evaluator", "FORMATS", "builtin_cases", "evaluate",
           "load_dataset", "summarize", "write_reports"]
