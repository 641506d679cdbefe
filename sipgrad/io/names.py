"""File-name-safe names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence


def slug(text: str) -> str:
    """``text`` with every run of characters outside [A-Za-z0-9._-] replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def unique_stems(names: Sequence[str]) -> list[str]:
    """File-name-safe stems, one per name; repeated names get ``-2``, ``-3``... so no file is overwritten."""
    seen: dict[str, int] = {}
    stems = []
    for name in names:
        stem = slug(Path(name).stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems
