"""Saliency overlays people want to look at.

Maps are clipped at a high percentile before colouring: a handful of extreme
gradient pixels would otherwise wash the whole heatmap out to one colour.
"""

from __future__ import annotations

import os
from typing import Iterator

import cv2
import numpy as np

from sipgrad.errors import SipgradError
from sipgrad.io.atomic import atomic_write
from sipgrad.io.images import array_to_rgb
from sipgrad.io.png import write_png_rows
from sipgrad.render.selection import CHUNK, all_finite, percentile

COLORMAPS = {
    "jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS, "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT,
}


ROWS_PER_CHUNK = 256  # large photos are coloured and blended this many rows at a time (bounded temporaries)


def map_scale(saliency: np.ndarray, clip_percentile: float = 99.0) -> float:
    """The value that becomes 1 in ``normalize_map``: the ``clip_percentile``-th value, else the
    maximum; 0 for a map with nothing positive. Non-finite values count as 0."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.size == 0:
        return 0.0
    if not all_finite(saliency):
        saliency = np.nan_to_num(saliency, nan=0.0, posinf=0.0, neginf=0.0)
    top = percentile(saliency, clip_percentile)  # no full-size copy of a large map
    if top <= 0:
        top = float(saliency.max(initial=0.0))
    return max(top, 0.0)


def normalize_map(saliency: np.ndarray, clip_percentile: float = 99.0, scale: float | None = None) -> np.ndarray:
    """Scale a map to [0, 1]: 0 stays 0, the ``clip_percentile``-th value (and above) becomes 1.

    ``scale`` overrides the percentile (``map_scale`` of the whole map when colouring it in parts).
    """
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = map_scale(saliency, clip_percentile) if scale is None else scale
    if top <= 0:
        return np.zeros_like(saliency)
    return np.clip(saliency / top, 0.0, 1.0)


def heatmap(saliency: np.ndarray, colormap: str = "jet", clip_percentile: float = 99.0,
            scale: float | None = None) -> np.ndarray:
    """An RGB uint8 heatmap of a 2-D map (see ``normalize_map`` for ``scale``)."""
    if colormap not in COLORMAPS:
        raise SipgradError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
    scaled = (normalize_map(saliency, clip_percentile, scale) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay_blocks(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, colormap: str = "jet",
                   clip_percentile: float = 99.0) -> Iterator[tuple[slice, np.ndarray]]:
    """The overlay of ``saliency`` on ``image`` as (rows, RGB uint8 block), ``ROWS_PER_CHUNK`` rows at a time.

    One colour scale for the whole map, so the blocks put together are exactly ``overlay``;
    consumers that write as they go (``save_overlay_png``) never hold the full-size overlay.
    """
    image = array_to_rgb(image)  # grey, RGBA or float [0, 1] images as explain reads them
    if image.shape[:2] != saliency.shape[:2]:
        saliency = cv2.resize(np.asarray(saliency, np.float32), (image.shape[1], image.shape[0]),
                              interpolation=cv2.INTER_LINEAR)
    scale = map_scale(saliency, clip_percentile)
    for start in range(0, image.shape[0], ROWS_PER_CHUNK):
        rows = slice(start, start + ROWS_PER_CHUNK)
        colored = heatmap(saliency[rows], colormap, clip_percentile, scale=scale)
        yield rows, cv2.addWeighted(np.ascontiguousarray(image[rows]), 1.0 - alpha, colored, alpha, 0.0)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, colormap: str = "jet",
            clip_percentile: float = 99.0) -> np.ndarray:
    """Blend the heatmap of ``saliency`` over ``image``: RGB uint8, or any array ``explain`` reads
    (grey, RGBA, floats in [0, 1]; ``sipgrad.io.images.array_to_rgb``). A map of another size is resized.

    Works in row blocks (``overlay_blocks``), so a 6000 x 4000 photo needs the output and a few
    small temporaries, not several full-size copies.
    """
    image = array_to_rgb(image)
    blended = np.empty(image.shape[:2] + (3,), np.uint8)
    for rows, block in overlay_blocks(image, saliency, alpha, colormap, clip_percentile):
        blended[rows] = block
    return blended


def save_overlay_png(path: str | os.PathLike, image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5,
                     colormap: str = "jet", clip_percentile: float = 99.0) -> None:
    """Write ``overlay(image, saliency, ...)`` as a PNG block by block (atomically).

    The same pixels as saving ``overlay``'s result, without the full-size overlay or an
    encoder buffer of its size: for a large photo that is the difference at the memory peak.
    """
    image = array_to_rgb(image)
    height, width = image.shape[:2]
    write_png_rows(path, width, height,
                   (block for _, block in overlay_blocks(image, saliency, alpha, colormap, clip_percentile)))


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically (temp file, then rename)."""
    with atomic_write(path, suffix=".tmp.png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise SipgradError(f"{path}: could not write PNG")


def save_npy(path: str | os.PathLike, array: np.ndarray, dtype: str = "float32") -> None:
    """Write a ``.npy`` of ``dtype`` (float32 or float16) atomically; float16 clips to its finite range."""
    array = np.asarray(array)
    if dtype == "float16":
        # Clipped and converted a chunk at a time: a full-size clipped float32 copy of a
        # 24-megapixel map would be 96 MB at the run's memory peak.
        limit = np.finfo(np.float16).max
        half = np.empty(array.shape, np.float16)
        source, target = np.ravel(array), half.reshape(-1)  # views for the usual contiguous map
        for start in range(0, source.size, CHUNK):
            part = slice(start, start + CHUNK)
            target[part] = np.clip(source[part], -limit, limit)  # no inf from a large value
        array = half
    else:
        array = array.astype(np.dtype(dtype), copy=False)
    with atomic_write(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)
