"""Evaluation cases: one image, one class to explain, and that class's boxes in the image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.io.images import load_image
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

    def load(self) -> Image.Image:
        if self.loader is not None:
            return self.loader()
        return load_image(self.image)


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
