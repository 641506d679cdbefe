"""Evaluation cases: one image, one class to explain, and that class's boxes in the image."""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from sipgrad.errors import ImageLoadError, SipgradError
from sipgrad.io.images import load_image, pixel_limit
from sipgrad.models.preprocessing import Geometry

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in continuous pixel coordinates


@dataclass(frozen=True)
class Case:
    """One thing to explain: ``target`` in ``image``, whose objects lie in ``boxes``.

    Boxes are in the original image's continuous pixel coordinates: a pixel (row i,
    column j) is inside when its centre (j + 0.5, i + 0.5) is. An image with objects of
    several classes yields one case per class, each explained separately.
    """

    case_id: str
    image: Path | None
    target: int
    boxes: tuple[Box, ...]
    loader: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)

    @property
    def noise_index(self) -> int:
        """A number from the case id alone (63 bits) that seeds this case's random methods (SmoothGrad, noise
        baselines): its noise is the same whatever batch, order, shard or resumed run it is explained in."""
        digest = hashlib.blake2b(self.case_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def load(self) -> Image.Image:
        """The case's image as RGB; raises ``ImageLoadError`` naming the file (or the case) on failure."""
        if self.loader is None:
            return load_image(self.image)
        try:
            return self.loader()
        except SipgradError:
            raise
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ImageLoadError(f"case {self.case_id}: cannot make its image ({reason})") from None


class BoxWarning(UserWarning):
    """A box was clipped to its image or dropped because it lies outside it."""


def make_box(values: Sequence[object], where: str, names: Sequence[str] = ("x0", "y0", "x1", "y1")) -> Box:
    """Four corner values as a box, or a one-line ``SipgradError`` that names ``where`` and the field.

    Refuses missing, non-numeric and non-finite coordinates and empty or inverted boxes
    (x1 <= x0 or y1 <= y0).
    """
    x0, y0, x1, y1 = finite_numbers(values, where, names)
    if not (x1 > x0 and y1 > y0):
        kind = "inverted" if (x1 < x0 or y1 < y0) else "empty"
        raise SipgradError(f"{where}: {kind} box ({names[0]}={x0:g}, {names[1]}={y0:g}, {names[2]}={x1:g}, "
                           f"{names[3]}={y1:g}); need {names[2]} > {names[0]} and {names[3]} > {names[1]}")
    return (x0, y0, x1, y1)


def finite_numbers(values: Sequence[object], where: str, names: Sequence[str]) -> list[float]:
    """``values`` as floats, or a one-line ``SipgradError`` naming ``where`` and the bad field."""
    coordinates = []
    for name, value in zip(names, values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SipgradError(f"{where}: box coordinate {name} is missing")
        if isinstance(value, bool):
            raise SipgradError(f"{where}: box coordinate {name}={value!r} is not a number")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SipgradError(f"{where}: box coordinate {name}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise SipgradError(f"{where}: box coordinate {name}={value!r} is not a finite number")
        coordinates.append(number)
    if len(coordinates) != len(names):
        raise SipgradError(f"{where}: need {len(names)} box values ({', '.join(names)}), got {len(coordinates)}")
    return coordinates


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as ``load_image`` will see it (EXIF rotation applied), read from the header
    only; ``None`` if the file cannot be opened (its load fails later and the case is skipped)."""
    try:
        pixel_limit()  # the same limit load_image applies (SIPGRAD_MAX_PIXELS), whichever is called first
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees
                width, height = height, width
            return width, height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, ImageLoadError):
        return None


def fit_boxes(case_id: str, boxes: Sequence[Box], size: tuple[int, int] | None) -> tuple[Box, ...]:
    """``boxes`` clipped to an image of ``size`` (width, height).

    A box reaching past the image is clipped with a ``BoxWarning``; a box wholly outside
    it (nothing left after clipping) is dropped with a ``BoxWarning``. Each names the case.
    """
    if size is None:
        return tuple(boxes)
    width, height = size
    kept, clipped, dropped = [], [], []
    for box in boxes:
        x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height))
        if not (x1 > x0 and y1 > y0):
            dropped.append(box)
            continue
        if (x0, y0, x1, y1) != tuple(box):
            clipped.append(box)
        kept.append((x0, y0, x1, y1))
    if clipped:
        warnings.warn(f"case {case_id}: {len(clipped)} box(es) reach past the {width}x{height} image and were "
                      f"clipped to it (first: {_show(clipped[0])})", BoxWarning, stacklevel=2)
    if dropped:
        warnings.warn(f"case {case_id}: {len(dropped)} box(es) lie wholly outside the {width}x{height} image and "
                      f"were dropped (first: {_show(dropped[0])})", BoxWarning, stacklevel=2)
    return tuple(kept)


def _show(box: Box) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def boxes_to_input(boxes: tuple[Box, ...], geometry: Geometry) -> list[Box]:
    """Boxes mapped from original pixels onto the model input (they may extend past its edges)."""
    return [geometry.box_to_input(box) for box in boxes]


def pad_boxes(per_case: list[list[Box]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes of a batch as a padded (B, N, 4) tensor and a (B, N) validity mask."""
    most = max(1, max(len(b) for b in per_case))
    boxes = torch.zeros(len(per_case), most, 4)
    valid = torch.zeros(len(per_case), most, dtype=torch.bool)
    for i, case_boxes in enumerate(per_case):
        if case_boxes:
            boxes[i, :len(case_boxes)] = torch.tensor(case_boxes, dtype=torch.float32)
            valid[i, :len(case_boxes)] = True
    return boxes, valid


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that escape ``root`` (``..``, absolute paths, symlinks out)."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise SipgradError(f"{relative}: path escapes the data root {root}")
    return candidate
