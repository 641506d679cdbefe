"""Labelled image lists for calibration: ImageFolder-style folders or a file list."""

from __future__ import annotations

import os
from pathlib import Path

from sipgrad.errors import SipgradError
from sipgrad.io.images import IMAGE_EXTENSIONS
from sipgrad.models.classes import ClassNames


def _junk(name: str) -> bool:
    """Names tools leave beside data: hidden files and folders, and the ``__MACOSX`` folder of zip archives."""
    return name.startswith(".") or name == "__MACOSX"


def labelled_images(source: str | os.PathLike, classes: ClassNames) -> list[tuple[Path, int]]:
    """``(path, class index)`` pairs, sorted, from a folder or a file list.

    A folder holds one sub-folder per class, named by class index (``285``), WordNet id
    (``n02124075``) or class name. A file list is a text file with one ``PATH LABEL``
    per line (label: index, wnid or name; relative paths are taken from the list's folder).
    Hidden folders and files (``.ipynb_checkpoints``, ``.git``, macOS's ``._x.jpg``) and
    ``__MACOSX`` are not part of the data set and are skipped.
    """
    source = Path(source)
    if source.is_dir():
        pairs = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not _junk(p.name)):
            label = _label(classes, folder.name, f"{folder}: class folder")
            pairs.extend((path, label) for path in sorted(folder.rglob("*"))
                         if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
                         and not any(_junk(part) for part in path.relative_to(folder).parts))
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
            path, label = _path_and_label(line, classes, source, f"{source}:{number}")
            pairs.append((path, label))
        if not pairs:
            raise SipgradError(f"{source}: the file list is empty")
        return pairs
    raise SipgradError(f"{source}: no such folder or file list")


def _path_and_label(line: str, classes: ClassNames, source: Path, where: str) -> tuple[Path, int]:
    """One list line's (path, class index): ``PATH<TAB>LABEL``, or ``PATH LABEL`` where LABEL may hold spaces.

    Class names such as ``Egyptian cat`` contain spaces, so without a tab the split is not
    simply at the last space: the shortest trailing run of words that names a class and
    leaves a path that exists wins (then the shortest that names a class). Relative paths
    are read from the list file's folder.
    """
    def resolved(text: str) -> Path:
        path = Path(text.strip())
        return path if path.is_absolute() else source.parent / path

    if "\t" in line:
        text, label = line.rsplit("\t", 1)
        return resolved(text), _label(classes, label.strip(), f"{where}: label")
    words = len(line.split())
    if words < 2:
        raise SipgradError(f"{where}: expected 'PATH LABEL' (or PATH, a tab, LABEL)")
    candidates, last_word_error = [], None
    for count in range(1, words):
        text, *label_words = line.rsplit(maxsplit=count)
        try:
            candidates.append((resolved(text), classes.index(" ".join(label_words))))
        except SipgradError as error:
            last_word_error = last_word_error or error
    if not candidates:
        raise SipgradError(f"{where}: label: {last_word_error} (a class name with spaces: put a tab before it)")
    existing = [c for c in candidates if c[0].is_file()]
    return (existing or candidates)[0]


def _label(classes: ClassNames, label: str, where: str) -> int:
    """``classes.index(label)``, its error prefixed with where the label was read (file and line, or folder)."""
    try:
        return classes.index(label)
    except SipgradError as error:
        raise SipgradError(f"{where}: {error}") from None
