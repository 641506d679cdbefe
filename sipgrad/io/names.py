"""File-name-safe names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence


def slug(text: str) -> str:
    """``text`` with every run of characters outside [A-Za-z0-9._-] replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def case_file(root: str | Path, group: str, case_id: str, suffix: str) -> Path:
    """Where a case's file goes: ``root/GROUP/FOLDERS/NAME_LABEL{suffix}``, one file per case id.

    A case id is an image's path inside its data set plus ``#label`` (``sub/x.jpg#285``). Its
    folders are kept as folders, so ``sub/x.jpg#285`` and ``sub_x.jpg#285`` get files of their
    own; where a part has characters a file name cannot carry safely (a space, ``..``), or
    the label holds a ``_`` (which would blur where the name ends), the name also gets a
    short hash of the whole id, so two ids never meet in one file.
    """
    import hashlib

    path_part, hash_mark, label = case_id.rpartition("#")
    if not hash_mark:
        path_part, label = case_id, ""
    parts = path_part.split("/")
    # The label joins the name after a "_": one holding "_" or a character slug replaces ("Egyptian cat") would make
    # the split ambiguous (x#1_2 and x_1#2), so it takes the hash too.
    lossy = any(not part or part in (".", "..") or slug(part) != part for part in parts) \
        or slug(label) != label or "_" in label
    parts = ["_" if part in ("", ".", "..") else slug(part) for part in parts]
    name = parts[-1] + (f"_{slug(label)}" if hash_mark else "")
    if lossy:
        name += "-" + hashlib.sha1(case_id.encode()).hexdigest()[:10]
    return Path(root, slug(group), *parts[:-1], name + suffix)


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
