"""``Explanation``: the maps of a batch of images, what produced them, and how to save them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sipgrad.errors import SipgradError
from sipgrad.io.names import slug, unique_stems
from sipgrad.models.classes import ClassNames
from sipgrad.models.preprocessing import Geometry
from sipgrad.render.figure import save_panels
from sipgrad.render.overlay import overlay as blend, save_npy, save_overlay_png

SALIENCY_DTYPES = ("float32", "float16")


@dataclass
class Explanation:
    """Saliency maps for a batch of images, and what produced them.

    Attributes:
        attribution: raw attribution at the model input, B x 3 x H x W (B x 1 x H x W for Grad-CAM).
        input_saliency: the 2-D maps at input resolution (B x H x W).
        saliency: the 2-D maps at each original image's size (float32 arrays).
        probabilities: softmax of the logits (B x K).
        targets: the explained class of each image (B,).
        layer: the layer Grad-CAM used, or ``None``.
        sip: the SIP configuration's label, or ``None``.
        seconds: wall time per image.
    """

    model_name: str
    method: str
    attribution: torch.Tensor
    input_saliency: torch.Tensor
    saliency: list[np.ndarray]
    probabilities: torch.Tensor
    targets: torch.Tensor
    classes: ClassNames
    images: list[np.ndarray]
    names: list[str]
    geometries: list[Geometry]
    layer: str | None = None
    sip: str | None = None
    seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.saliency)

    def top(self, i: int, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` most probable classes of image ``i``: dicts with index, name, prob."""
        probs, index = self.probabilities[i].topk(min(k, self.probabilities.shape[1]))
        return [{"index": int(j), "name": self.classes[int(j)], "prob": float(p)} for p, j in zip(probs, index)]

    @property
    def predictions(self) -> list[list[dict[str, Any]]]:
        """Top-5 predictions of every image."""
        return [self.top(i) for i in range(len(self))]

    def target(self, i: int) -> dict[str, Any]:
        index = int(self.targets[i])
        return {"index": index, "name": self.classes[index], "prob": float(self.probabilities[i, index])}

    def overlay(self, i: int, alpha: float = 0.5, colormap: str = "jet", clip_percentile: float = 99.0) -> np.ndarray:
        """RGB uint8 overlay of image ``i``'s map on the original image (same size)."""
        return blend(self.images[i], self.saliency[i], alpha, colormap, clip_percentile)

    @property
    def label(self) -> str:
        """The method, with the SIP configuration when there is one: how figures name these maps."""
        return f"{self.method} + SIP {self.sip}" if self.sip else self.method

    def title(self, i: int, label: str | None = None) -> str:
        """Image ``i``'s figure title: model | ``label`` (default: this result's) | target and its probability."""
        target = self.target(i)
        return f"{self.model_name} | {label or self.label} | {target['name']} ({target['prob']:.1%})"

    def save(self, directory: str | os.PathLike, figure: bool = True, *, stems: Sequence[str] | None = None,
             saliency_dtype: str = "float32") -> list[dict[str, str]]:
        """Write per image ``<stem>.<method>.saliency.npy``, ``.overlay.png`` (and ``.figure.png``); return the paths.

        With SIP the method is followed by ``.sip-<policy>``; a map of another class than the
        image's top-1 prediction adds ``.class-<index>`` (e.g. ``chelsea.grad.class-967``).

        Args:
            directory: output folder (created if missing).
            figure: also write the image | heatmap | overlay figure.
            stems: output file stems, one per image (default: from ``names``, made unique within
                this batch); pass stems unique over a whole run when saving it batch by batch.
            saliency_dtype: ``float32`` or ``float16`` (half the size; about 3 significant digits,
                enough for display and ranking, not for exact attribution sums).
        """
        if saliency_dtype not in SALIENCY_DTYPES:
            raise SipgradError(f"saliency_dtype must be one of {', '.join(SALIENCY_DTYPES)}, got {saliency_dtype!r}")
        stems = unique_stems(self.names) if stems is None else list(stems)
        if len(stems) != len(self) or len(set(stems)) != len(stems):
            raise SipgradError(f"stems must be {len(self)} distinct names, one per image")
        return [self.save_image(i, directory, stem, figure, saliency_dtype=saliency_dtype)
                for i, stem in enumerate(stems)]

    def save_image(self, index: int, directory: str | os.PathLike, stem: str, figure: bool = True, *,
                   saliency_dtype: str = "float32") -> dict[str, str]:
        """``save`` for image ``index`` alone, under ``stem``: its paths.

        All or nothing per image: if one of its files cannot be written (a folder in the way, a
        full disk), the ones already written for it are removed before the error is raised, so
        a caller saving image by image keeps every other image's files and no half set.
        """
        if saliency_dtype not in SALIENCY_DTYPES:
            raise SipgradError(f"saliency_dtype must be one of {', '.join(SALIENCY_DTYPES)}, got {saliency_dtype!r}")
        directory = Path(directory)
        suffix = self.method + (f".sip-{slug(self.sip)}" if self.sip else "")
        # A map of another class than the top-1 names its class: explaining one image for two classes
        # must not leave only the second map under the same name.
        explained = int(self.targets[index])
        top1 = int(self.probabilities[index].topk(1).indices[0])  # as ``top`` ranks them (ties alike)
        base = str(directory / (f"{stem}.{suffix}" if explained == top1 else f"{stem}.{suffix}.class-{explained}"))
        paths = {"saliency": base + ".saliency.npy", "overlay": base + ".overlay.png"}
        if figure:
            paths["figure"] = base + ".figure.png"
        written: list[str] = []
        try:
            save_npy(paths["saliency"], self.saliency[index], dtype=saliency_dtype)
            written.append(paths["saliency"])
            save_overlay_png(paths["overlay"], self.images[index], self.saliency[index])  # streamed: no full-size copy
            written.append(paths["overlay"])
            if figure:
                save_panels(paths["figure"], self.images[index], [self.saliency[index]], [self.label], self.title(index))
        except BaseException:
            for path in written:
                Path(path).unlink(missing_ok=True)
            raise
        return paths
