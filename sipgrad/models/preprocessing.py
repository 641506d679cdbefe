"""Turning images into model inputs, and mapping results back onto the image.

A ``Geometry`` records which part of the original image the model input covers, so
saliency maps can be pasted back at the original size (overlays line up) and boxes
can follow the image through resize and crop exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """Where a model input came from in its original image.

    ``region`` is (x0, y0, x1, y1) in original pixel coordinates (floats) of the area
    that was resized to ``input_size`` (height, width).
    """

    original_size: tuple[int, int]  # (height, width)
    region: tuple[float, float, float, float]
    input_size: tuple[int, int]  # (height, width)

    def box_to_input(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map a box (x0, y0, x1, y1) from original pixels to input pixels (may fall outside)."""
        rx0, ry0, rx1, ry1 = self.region
        sx = self.input_size[1] / (rx1 - rx0)
        sy = self.input_size[0] / (ry1 - ry0)
        x0, y0, x1, y1 = box
        return ((x0 - rx0) * sx, (y0 - ry0) * sy, (x1 - rx0) * sx, (y1 - ry0) * sy)

    def _pixel_region(self) -> tuple[int, int, int, int]:
        """``region`` rounded to whole pixels (x0, y0, x1, y1), at least one pixel wide and tall."""
        rx0, ry0, rx1, ry1 = self.region
        x0, y0 = int(round(rx0)), int(round(ry0))
        return x0, y0, max(x0 + 1, int(round(rx1))), max(y0 + 1, int(round(ry1)))

    def covered(self, image: np.ndarray) -> np.ndarray:
        """The part of the original ``image`` (H x W[ x C]) that the model input shows (all of it without crop)."""
        x0, y0, x1, y1 = self._pixel_region()
        return image[max(y0, 0):y1, max(x0, 0):x1]

    def map_to_original(self, saliency: torch.Tensor) -> torch.Tensor:
        """Resize a 2-D map at input resolution back onto the original image grid.

        Outside the covered region (crop mode) the map is zero.
        """
        height, width = self.original_size
        x0, y0, x1, y1 = self._pixel_region()
        resized = F.interpolate(saliency[None, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                                align_corners=False)[0, 0]
        if (x0, y0, x1, y1) == (0, 0, width, height):
            return resized
        out = saliency.new_zeros((height, width), dtype=torch.float32)
        out[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)] = resized[
            max(-y0, 0):(y1 - y0) - max(y1 - height, 0), max(-x0, 0):(x1 - x0) - max(x1 - width, 0)]
        return out


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: size, standard crop, and per-channel normalisation.

    ``mean``/``std`` apply to pixel values scaled to [0, 1]. By default images are
    explained whole (resized to ``input_size`` squared, no crop); ``crop=True`` uses
    the standard evaluation transform (shorter side to ``resize_size``, centre crop).
    """

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def geometry(self, width: int, height: int, crop: bool) -> Geometry:
        """The region of a ``width`` x ``height`` image that the input will cover."""
        size = self.input_size
        if not crop:
            return Geometry((height, width), (0.0, 0.0, float(width), float(height)), (size, size))
        (new_w, new_h), (left, top) = self._crop_layout(width, height)
        sx, sy = width / new_w, height / new_h
        return Geometry((height, width), (left * sx, top * sy, (left + size) * sx, (top + size) * sy), (size, size))

    def _crop_layout(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The resized (width, height) and the crop's (left, top) for ``crop=True``.

        Same arithmetic as torchvision's ``Resize(resize_size)`` followed by ``CenterCrop(input_size)``.
        """
        size = self.input_size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        return (new_w, new_h), (int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0)))

    def prepare(self, image: Image.Image, crop: bool = False) -> tuple[torch.Tensor, Geometry]:
        """Return the normalised 3 x H x W input tensor for ``image`` and its geometry."""
        geometry = self.geometry(image.width, image.height, crop)
        if crop:
            # torchvision's Resize(int) + CenterCrop(int) on a PIL image, done with Pillow alone so
            # the explain path does not import torchvision (about 160 MiB of resident memory).
            size = self.input_size
            (new_w, new_h), (left, top) = self._crop_layout(image.width, image.height)
            resized = image.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + size, top + size))
        else:
            resized = image.resize((self.input_size, self.input_size), Image.BILINEAR)
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return self.normalize(tensor), geometry

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise pixels in [0, 1] (channels first, any leading dims)."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inverse of ``normalize``: model inputs back to pixels in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=inputs.dtype, device=inputs.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device).view(3, 1, 1)
        return inputs * std + mean
