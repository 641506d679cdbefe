"""File-name-safe names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence


def slug(text: str) -> str:
    """``text`` with every run of characters outside [A-Za-z0-9._-] replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def unique_stems(names: Sequence[str]) -> list[str]:
    """File-name-safe stems, one per name; repeated names get ``-2``, ``-3``... so no file is overwritten.

    A generated stem never equals another name's stem either (``a``, ``a``, ``a-2`` give
    ``a``, ``a-2``, ``a-2-2``), and stems differing only in letter case count as the same
    (case-insensitive file systems).
    """
    taken: set[str] = set()
    stems = []
    for name in names:
        base = slug(Path(name).stem) or "image"
        stem, number = base, 1
        while stem.lower() in taken:
            number += 1
            stem = f"{base}-{number}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """Unique output stems for input files, in order: each file's own name where it is unique, and
    ``NAME-2``, ``NAME-3``... for the same name met again (e.g. in another folder)."""
    return unique_stems([Path(p).name for p in paths])
