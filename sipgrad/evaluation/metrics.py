"""Localisation and faithfulness metrics, batched over images.

All maps are 2-D saliency maps at model-input resolution (B x H x W) and boxes are in
input pixels, padded to (B, N, 4) with a (B, N) validity mask (see ``cases.pad_boxes``).
A pixel (row i, column j) belongs to a box when its centre (j + 0.5, i + 0.5) does.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _pixel_ranges(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Inclusive pixel index ranges (c0, c1, r0, r1) covered by each box, clipped to the image."""
    c0 = torch.ceil(boxes[..., 0] - 0.5).clamp(min=0)
    c1 = torch.floor(boxes[..., 2] - 0.5).clamp(max=width - 1)
    r0 = torch.ceil(boxes[..., 1] - 0.5).clamp(min=0)
    r1 = torch.floor(boxes[..., 3] - 0.5).clamp(max=height - 1)
    return c0, c1, r0, r1


def box_mask(boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of each image's boxes as a (B, H, W) boolean mask."""
    c0, c1, r0, r1 = _pixel_ranges(boxes, height, width)
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    in_cols = (cols >= c0[..., None]) & (cols <= c1[..., None])  # B, N, W
    in_rows = (rows >= r0[..., None]) & (rows <= r1[..., None])  # B, N, H
    per_box = in_rows[..., :, None] & in_cols[..., None, :] & valid[..., None, None]
    return per_box.any(dim=1)


def _hits_at(points: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int,
             tolerance: float) -> torch.Tensor:
    """Whether a disc of radius ``tolerance`` px around each (row, col) point touches a box pixel."""
    c0, c1, r0, r1 = _pixel_ranges(boxes, height, width)
    row, col = points[:, 0:1].to(boxes.dtype), points[:, 1:2].to(boxes.dtype)
    dx = torch.clamp(torch.maximum(c0 - col, col - c1), min=0)
    dy = torch.clamp(torch.maximum(r0 - row, row - r1), min=0)
    reachable = (dx * dx + dy * dy <= tolerance * tolerance) & valid & (c0 <= c1) & (r0 <= r1)
    return reachable.any(dim=1)


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, tolerance: float = 15.0) -> torch.Tensor:
    """Hit (B,) if the disc of ``tolerance`` px around the map's maximum touches a target box (TorchRay/EBP)."""
    batch, height, width = maps.shape
    flat_index = maps.reshape(batch, -1).argmax(dim=1)
    points = torch.stack((flat_index // width, flat_index % width), dim=1)
    return _hits_at(points, boxes, valid, height, width, tolerance)


def centre_baseline(boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int,
                    tolerance: float = 15.0) -> torch.Tensor:
    """The pointing game played by always pointing at the image centre."""
    points = torch.tensor([[height // 2, width // 2]], device=boxes.device).expand(boxes.shape[0], 2)
    return _hits_at(points, boxes, valid, height, width, tolerance)


def energy_pointing_game(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the map's positive mass inside the boxes (Score-CAM's energy-based pointing game)."""
    positive = maps.clamp_min(0)
    total = positive.sum(dim=(1, 2))
    inside = (positive * mask).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def mu_in(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ParchGrad's mu_in (share of |map| inside the boxes) and mu_in_w (mu_in x image area / box area).

    mu_in_w is 1 for a uniform map and above 1 when the map concentrates on the boxes.
    """
    magnitude = maps.abs()
    total = magnitude.sum(dim=(1, 2)).clamp_min(1e-30)
    share = (magnitude * mask).sum(dim=(1, 2)) / total
    area = mask.shape[1] * mask.shape[2]
    box_area = mask.sum(dim=(1, 2)).clamp_min(1)
    return share, share * area / box_area


def _blur(inputs: torch.Tensor, sigma: float = 8.0) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-x * x / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    padded = F.pad(inputs, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def perturbation_curves(predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                        maps: torch.Tensor, targets: torch.Tensor, steps: int = 10, mode: str = "deletion",
                        most_relevant_first: bool = True, chunk: int = 32,
                        baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Target-class probability as pixels are deleted or inserted in saliency order: (B, steps + 1).

    Deletion starts from the image and replaces pixels with ``baseline`` (default: an
    all-zero input, the data set mean after normalisation); insertion starts from a
    blurred copy and puts the original pixels back. Every perturbed copy of every image
    goes through ``predict`` (logits) in chunks of ``chunk`` rows; call under
    ``torch.inference_mode``.
    """
    batch, channels, height, width = inputs.shape
    pixels = height * width
    # A stable sort: tied pixels (e.g. the zeros of a sparse map) keep a fixed order, so results
    # do not depend on how the sort happens to break ties for a given batch.
    order = maps.reshape(batch, -1).argsort(dim=1, descending=most_relevant_first, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=order.device).expand(batch, pixels))
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=inputs.device)).long()
    chosen = (rank[:, None, :] < counts[None, :, None]).view(batch, steps + 1, 1, height, width)
    if mode == "deletion":
        start, end = inputs, torch.zeros_like(inputs) if baseline is None else baseline.expand_as(inputs)
    elif mode == "insertion":
        start, end = _blur(inputs) if baseline is None else baseline.expand_as(inputs), inputs
    else:
        raise ValueError(f"mode must be deletion or insertion, not {mode!r}")
    probabilities = []
    flat_chosen = chosen.reshape(batch * (steps + 1), 1, height, width)
    row_image = torch.arange(batch, device=inputs.device).repeat_interleave(steps + 1)
    for begin in range(0, batch * (steps + 1), chunk):
        index = row_image[begin:begin + chunk]
        perturbed = torch.where(flat_chosen[begin:begin + chunk], end[index], start[index])
        probs = predict(perturbed).float().softmax(dim=1)
        probabilities.append(probs.gather(1, targets[index][:, None])[:, 0])
    return torch.cat(probabilities).view(batch, steps + 1)


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under each curve over x in [0, 1] (trapezoid rule)."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def aopc(curves: torch.Tensor) -> torch.Tensor:
    """Area over the perturbation curve: mean drop from the start, mean over steps 0..S (Samek et al.)."""
    return (curves[:, :1] - curves).mean(dim=1)
