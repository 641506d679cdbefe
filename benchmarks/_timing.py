"""Timing helpers shared by the benchmark scripts.

Machines here are noisy, so variants are measured side by side: each round runs every
variant once in turn, and the median over rounds is reported.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant, measured in interleaved rounds."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            began = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_json(path: str | Path, rows: list[dict], **meta) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
                **meta, "rows": rows}
    path.write_text(json.dumps(document, indent=2))
    print(f"\nwrote {path}")
