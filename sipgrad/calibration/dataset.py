"""Labelled image lists for calibration: ImageFolder-style folders or a file list."""

from __future__ import annotations

import os
from pathlib import Path

from sipgrad.errors import SipgradError
from sipgrad.io.images import IMAGE_EXTENSIONS
from sipgrad.models.classes import ClassNames


def labelled_images(source: str | os.PathLike, classes: ClassNames) -> list[tuple[Path, int]]:
    """``(path, class index)`` pairs, sorted, from a folder or a file list.

    A folder holds one sub-folder per class, named by class index (``285``), WordNet id
    (``n02124075``) or class name. A file list is a text file with one ``PATH LABEL``
    per line (label: index, wnid or name; relative paths are taken from the list's folder).
    """
    source = Path(source)
    if source.is_dir():
        pairs = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            label = _label(classes, folder.name, f"{folder}: class folder")
            pairs.extend((path, label) for path in sorted(folder.rglob("*"))
                         if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
        if not pairs:
            raise SipgradError(f"{source}: no images in class sub-folders")
        return pairs
    if source.is_file():
        pairs = []
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise SipgradError(f"{source}: not a text file of 'PATH LABEL' lines (not UTF-8: {error.reason})") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise SipgradError(f"{source}:{number}: expected 'PATH LABEL'")
            path = Path(parts[0])
            label = _label(classes, parts[1], f"{source}:{number}: label")
            pairs.append((path if path.is_absolute() else source.parent / path, label))
        if not pairs:
            raise SipgradError(f"{source}: the file list is empty")
        return pairs
    raise SipgradError(f"{source}: no such folder or file list")


def _label(classes: ClassNames, label: str, where: str) -> int:
    """``classes.index(label)``, its error prefixed with where the label was read (file and line, or folder)."""
    try:
        return classes.index(label)
    except SipgradError as error:
        raise SipgradError(f"{where}: {error}") from None
