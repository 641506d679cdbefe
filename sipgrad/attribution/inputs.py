"""Turning what users pass (paths, PIL images, arrays, tensors) into a model batch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from sipgrad.errors import SipgradError
from sipgrad.io.images import array_to_rgb, load_image, to_rgb
from sipgrad.models.preprocessing import Geometry, Preprocessing


@dataclass
class PreparedBatch:
    """Model inputs plus what is needed to map results back onto the originals."""

    inputs: torch.Tensor  # B x 3 x H x W, normalised
    geometries: list[Geometry]
    images: list[np.ndarray]  # original RGB uint8 images, for overlays
    names: list[str]


def _is_rgb_uint8(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[-1] == 3


def to_pil(item: Any) -> tuple[Image.Image, str]:
    """One image (path, PIL image or array) as RGB PIL plus a display name."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item), Path(item).name
    if isinstance(item, Image.Image):
        return to_rgb(item), "image"
    if isinstance(item, np.ndarray):
        return Image.fromarray(array_to_rgb(item)), "array"
    raise SipgradError(f"cannot explain an object of type {type(item).__name__}; "
                       f"pass paths, PIL images, numpy arrays or a tensor")


def prepare_batch(images: Any, preprocessing: Preprocessing, crop: bool = False) -> PreparedBatch:
    """Prepare ``images``: a tensor (taken as the model input as it is) or a sequence of images."""
    if isinstance(images, torch.Tensor):
        inputs = images if images.dim() == 4 else images[None]
        if inputs.dim() != 4 or inputs.shape[0] == 0:
            raise SipgradError(f"expected an input tensor B x C x H x W with B >= 1, got shape {tuple(images.shape)}")
        if not inputs.is_floating_point():
            raise SipgradError(f"an input tensor is taken as preprocessed model input and must be floating "
                               f"point, got {inputs.dtype} (pass images as arrays or PIL images instead)")
        height, width = inputs.shape[-2:]
        geometry = Geometry((height, width), (0.0, 0.0, float(width), float(height)), (height, width))
        pixels = preprocessing.denormalize(inputs.detach().float().cpu()) if inputs.shape[1] == 3 else None
        shown = [(np.clip(np.nan_to_num(p.permute(1, 2, 0).numpy()), 0, 1) * 255).astype(np.uint8) for p in pixels] \
            if pixels is not None else [np.zeros((height, width, 3), np.uint8)] * inputs.shape[0]
        return PreparedBatch(inputs, [geometry] * inputs.shape[0], shown, [f"input{i}" for i in range(len(shown))])
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise SipgradError("no images to explain")
    tensors, geometries, originals, names = [], [], [], []
    for number, item in enumerate(images):
        image, name = to_pil(item)
        if not isinstance(item, (str, os.PathLike)):
            name = f"{name}{number}"
        tensor, geometry = preprocessing.prepare(image, crop=crop)
        tensors.append(tensor)
        geometries.append(geometry)
        # An RGB uint8 array is kept as it is: the PIL copy made for resizing is dropped here,
        # so a large photo passed as an array is held once, not twice.
        originals.append(item if _is_rgb_uint8(item) else np.asarray(image))
        del image
        names.append(name)
    return PreparedBatch(torch.stack(tensors), geometries, originals, names)
