"""Append-only JSONL records: finished results survive Ctrl-C and crashes, and runs resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def read_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every complete record in ``paths``; a torn last line (a crash mid-write) is ignored."""
    records = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records and fsync, so a finished batch is on disk before the next one starts."""
    lines = "".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n" for r in records)
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        if handle.tell() > 0 and not _ends_with_newline(path):
            handle.write("\n")  # seal a torn line left by a crash
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def done_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(case, config) pairs with scores; failed ones (an ``error`` record) are tried again."""
    return {(r["case"], r["config"]) for r in records if "error" not in r}


def deduplicated(records: Iterable[dict[str, Any]], case_order: dict[str, int],
                 config_order: dict[str, int]) -> list[dict[str, Any]]:
    """One record per (case, config), a scored one before a failure, in data set order then config order."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (record["case"], record["config"])
        if key not in unique or ("error" in unique[key] and "error" not in record):
            unique[key] = record  # a scored record replaces an earlier failure
    return sorted(unique.values(), key=lambda r: (case_order.get(r["case"], 1 << 30),
                                                  config_order.get(r["config"], 1 << 30)))
