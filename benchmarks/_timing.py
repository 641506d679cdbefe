"""Timing helpers shared by the benchmark scripts.

Machines here are noisy, so variants are measured side by side: each round runs every
variant once in turn, and the median over rounds is reported.
"""

from __future__ import annotations

import json
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch


def synchronized_clock() -> float:
    """``time.perf_counter()`` once the GPU (when one is in use) has finished its queued work.

    CUDA kernels run asynchronously: without this, a timed call would measure only how long
    launching its kernels took.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant, measured in interleaved rounds."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            began = synchronized_clock()
            run()
            samples[name].append(synchronized_clock() - began)
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratios(base: Callable[[], object], variant: Callable[[], object], rounds: int,
                  warmup: int = 1) -> tuple[list[float], list[float], list[float]]:
    """Time ``base`` and ``variant`` back to back ``rounds`` times; returns (ratios, base s, variant s).

    The order alternates every round (ABBA), so a slow drift of the machine does not favour
    either side, and each ratio compares two calls made seconds apart: on a noisy machine the
    median of these paired ratios is far steadier than the ratio of two medians.
    """
    for _ in range(warmup):
        base()
        variant()
    ratios, base_times, variant_times = [], [], []
    for round_index in range(rounds):
        order = (base, variant) if round_index % 2 == 0 else (variant, base)
        seconds = {}
        for run in order:
            began = synchronized_clock()
            run()
            seconds[run] = synchronized_clock() - began
        base_times.append(seconds[base])
        variant_times.append(seconds[variant])
        ratios.append(seconds[variant] / seconds[base])
    return ratios, base_times, variant_times


def median_interval(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median and a bootstrap 95% interval of the median."""
    generator = random.Random(seed)
    medians = sorted(statistics.median(generator.choices(values, k=len(values))) for _ in range(resamples))
    return statistics.median(values), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        if value and abs(value) < 1e-3:  # rounding-level differences: 0.000 would hide them
            return f"{value:.1e}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def cpu_model() -> str:
    """The CPU's model as Linux names it, with its family/model numbers and whether it has AVX-512.

    "x86_64" alone cannot tell whether two sessions timed the same processor: the same code's
    forward/reverse hypergradient ratio measured 4.0x in one session and 3.3x in another
    (docs/engines.md, goal 2).
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    avx512 = " avx512f" if " avx512f" in " " + fields.get("flags", "") else ""
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}"
            f"{', AVX-512' if avx512 else ''})")


def write_json(path: str | Path, rows: list[dict], **meta) -> None:
    """Write ``rows`` with the machine, ``meta`` and the command line that made them (unless ``meta`` names one).

    Docs quote a committed JSON with the command that produced it; recording the command here
    means a doc's command can always be checked against the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.setdefault("command", "python " + " ".join(shlex.quote(a) for a in sys.argv))
    document = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
                            "cpu": cpu_model()},
                **meta, "rows": rows}
    path.write_text(json.dumps(document, indent=2))
    print(f"\nwrote {path}")
