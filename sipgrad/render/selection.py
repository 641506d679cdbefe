"""Percentiles of very large maps without copying them.

``np.percentile`` partitions a full copy of its input: for the 24-megapixel map of a
6000 x 4000 photo that is another 96 MB (plus a mask) at the moment the overlay is being
made, the run's memory peak. ``percentile`` gives the same value (numpy's default
"linear" method) by selecting the two order statistics it needs with bucket counts over
fixed-size chunks, so its temporaries stay at a few MB whatever the map's size.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK = 1 << 20  # elements per pass-through chunk, and the largest bucket partitioned directly
BUCKETS = 4096


def percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` (linear interpolation) for finite ``values``.

    Small inputs go straight to numpy; inputs over ``CHUNK`` elements are selected in chunks.
    """
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        raise ValueError("percentile of an empty array")
    if flat.size <= CHUNK:
        return float(np.percentile(flat, q))
    position = q / 100.0 * (flat.size - 1)
    lower = math.floor(position)
    upper = min(lower + 1, flat.size - 1)
    low_value = _order_statistic(flat, lower)
    high_value = low_value if upper == lower else _order_statistic(flat, upper)
    return _lerp(low_value, high_value, position - lower)


def all_finite(values: np.ndarray) -> bool:
    """``np.isfinite(values).all()`` one chunk at a time (no full-size mask)."""
    flat = np.asarray(values).reshape(-1)
    return all(bool(np.isfinite(chunk).all()) for chunk in _chunks(flat))


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation between neighbouring order statistics (exact at both ends)."""
    difference = b - a
    return b - difference * (1.0 - t) if t >= 0.5 else a + difference * t


def _chunks(flat: np.ndarray):
    for start in range(0, flat.size, CHUNK):
        yield flat[start:start + CHUNK]


def _order_statistic(flat: np.ndarray, k: int) -> float:
    """The ``k``-th smallest value (0-based) of ``flat``, reading it in chunks.

    Each round counts the values of the current range [low, high] per bucket, keeps only the
    bucket that holds rank ``k``, and narrows the range to that bucket's own smallest and
    largest value. The range's ends always fall in different buckets, so every round shrinks
    it; once the bucket is small enough it is partitioned directly.
    """
    low = min(float(chunk.min()) for chunk in _chunks(flat))
    high = max(float(chunk.max()) for chunk in _chunks(flat))
    below = 0  # values known to be smaller than ``low``
    while low < high:
        width = (high - low) / BUCKETS

        def bucket(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            inside = chunk[(chunk >= low) & (chunk <= high)].astype(np.float64)
            return inside, np.minimum(((inside - low) / width).astype(np.int64), BUCKETS - 1)

        counts = np.zeros(BUCKETS, dtype=np.int64)
        for chunk in _chunks(flat):
            counts += np.bincount(bucket(chunk)[1], minlength=BUCKETS)
        cumulative = np.cumsum(counts)
        chosen = int(np.searchsorted(cumulative, k - below, side="right"))
        before = below + (int(cumulative[chosen - 1]) if chosen else 0)
        if counts[chosen] <= CHUNK:
            kept = np.concatenate([inside[index == chosen] for inside, index in map(bucket, _chunks(flat))])
            return float(np.partition(kept, k - before)[k - before])
        parts = [inside[index == chosen] for inside, index in map(bucket, _chunks(flat))]
        low = min(float(p.min()) for p in parts if p.size)
        high = max(float(p.max()) for p in parts if p.size)
        below = before
    return low
