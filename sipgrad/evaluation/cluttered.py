"""Cluttered digits: scikit-learn's handwritten digits on a larger canvas with clutter.

Like cluttered MNIST: each 8 x 8 digit is scaled up and placed at a random position on a
64 x 64 canvas strewn with fragments of other digits, so a saliency map has real
distractors to avoid. Generation is deterministic from a seed; the box of the digit is
known exactly. Digits 0..1499 of scikit-learn's set form the training split, the rest
(297) the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

CANVAS = 64
DIGIT = 24
FRAGMENT = 8
TRAIN_DIGITS = 1500


@dataclass(frozen=True)
class ClutteredSample:
    image: np.ndarray  # CANVAS x CANVAS x 3, uint8
    label: int
    box: tuple[float, float, float, float]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _upscaled(digit: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                      dtype=np.float32) / 255.0


def make_samples(split: str, count: int, seed: int = 0, fragments: int = 6) -> list[ClutteredSample]:
    """``count`` cluttered samples from the ``train`` or ``test`` digits."""
    images, labels = _digits()
    index = np.arange(TRAIN_DIGITS) if split == "train" else np.arange(TRAIN_DIGITS, len(labels))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    samples = []
    for n in range(count):
        canvas = np.zeros((CANVAS, CANVAS), np.float32)
        for _ in range(fragments):  # clutter: random pieces of random digits
            piece = _upscaled(images[rng.choice(index)], DIGIT)
            y, x = rng.integers(0, DIGIT - FRAGMENT, 2)
            fy, fx = rng.integers(0, CANVAS - FRAGMENT, 2)
            canvas[fy:fy + FRAGMENT, fx:fx + FRAGMENT] = np.maximum(
                canvas[fy:fy + FRAGMENT, fx:fx + FRAGMENT], piece[y:y + FRAGMENT, x:x + FRAGMENT])
        which = index[n % len(index)] if split == "test" else rng.choice(index)
        y0, x0 = rng.integers(0, CANVAS - DIGIT, 2)
        canvas[y0:y0 + DIGIT, x0:x0 + DIGIT] = np.maximum(canvas[y0:y0 + DIGIT, x0:x0 + DIGIT],
                                                          _upscaled(images[which], DIGIT))
        rgb = np.repeat((canvas * 255).astype(np.uint8)[..., None], 3, axis=2)
        samples.append(ClutteredSample(rgb, int(labels[which]), (float(x0), float(y0), float(x0 + DIGIT),
                                                                  float(y0 + DIGIT))))
    return samples
