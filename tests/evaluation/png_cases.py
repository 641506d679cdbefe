"""Small evaluation cases on random 48 x 40 PNG images, for the runner and evaluator tests."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from sipgrad.evaluation.cases import Case

Box = tuple[float, float, float, float]


def random_png_cases(folder: Path, count: int, label_of: Callable[[int], int],
                     boxes_of: Callable[[int], tuple[Box, ...]]) -> list[Case]:
    """Cases c0..c{count-1}: image i is random noise (seed 0, drawn in order), with label_of(i) and boxes_of(i)."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        cases.append(Case(f"c{i}", path, label_of(i), boxes_of(i)))
    return cases
