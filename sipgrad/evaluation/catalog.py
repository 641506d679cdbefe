"""The evaluation metrics, one entry each: what they are called, which way is better, their range,
and how they are computed.

Every part that computes, shows or compares metrics (the evaluator's record columns, the
summary, the report, the CLI and the tests) reads this one registry, so adding a metric is
one entry here (its arithmetic may live in ``metrics.py``, as the built-in ones do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import torch

from sipgrad.evaluation import metrics as _metrics

Better = Literal["higher", "lower"]
Family = Literal["box", "perturbation"]


@dataclass(frozen=True)
class ScoringInputs:
    """What a metric's computation may read for a batch of B maps.

    Attributes:
        maps: saliency maps at model-input resolution (B x H x W).
        boxes, valid: the target boxes in input pixels, padded to (B, N, 4), and their (B, N) validity.
        mask: the union of each image's boxes (B x H x W, bool).
        tolerance: the pointing game's radius in px.
        curves: for ``perturbation`` metrics, the probability curves of
            ``metrics.perturbation_curve_set`` (name -> B x (steps + 1)); None for box metrics.
    """

    maps: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor
    tolerance: float
    curves: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Metric:
    """One evaluation metric.

    Attributes:
        name: the record column (``"energy"``).
        label: a short human name for tables and plots.
        better: ``"higher"`` or ``"lower"``: which direction is a better explanation.
        range: (low, high) of possible values; ``math.inf`` for an open end.
        family: ``"box"`` (scored against the boxes) or ``"perturbation"`` (deletion/insertion).
        description: one line saying what it measures.
        baseline_of: for a baseline (not an explanation score), the metric it is the baseline of.
        same_as: a metric this one equals whenever every map is non-negative (reports show one).
        compute: ``compute(ScoringInputs) -> (B,)`` scores of one batch; the evaluator records them under ``name``.
    """

    name: str
    label: str
    better: Better
    range: tuple[float, float]
    family: Family
    description: str
    baseline_of: str | None = None
    same_as: str | None = None
    compute: Callable[[ScoringInputs], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.compute):
            raise ValueError(f"metric {self.name!r}: compute must be a function of ScoringInputs")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"metric {self.name!r}: better must be 'higher' or 'lower', not {self.better!r}")
        if self.family not in ("box", "perturbation"):
            raise ValueError(f"metric {self.name!r}: family must be 'box' or 'perturbation', not {self.family!r}")
        low, high = self.range
        if not low < high:
            raise ValueError(f"metric {self.name!r}: range {self.range} is empty")

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, ``↓`` when lower is."""
        return "\u2191" if self.higher_is_better else "\u2193"

    def best(self, values: list[float]) -> float:
        """The best of ``values`` in this metric's direction."""
        return max(values) if self.higher_is_better else min(values)


def _centre(inputs: ScoringInputs) -> torch.Tensor:
    height, width = inputs.maps.shape[-2:]
    return _metrics.centre_baseline(inputs.boxes, inputs.valid, height, width, inputs.tolerance).float()


def _curve(name: str, summary: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[ScoringInputs], torch.Tensor]:
    return lambda inputs: summary(inputs.curves[name])


_ENTRIES = (
    Metric("pointing", "pointing game", "higher", (0.0, 1.0), "box",
           "1 if a disc of the tolerance radius around the map's maximum touches a target box",
           compute=lambda s: _metrics.pointing_game(s.maps, s.boxes, s.valid, s.tolerance).float()),
    Metric("centre", "centre baseline", "higher", (0.0, 1.0), "box",
           "the pointing game played by always pointing at the image centre", baseline_of="pointing",
           compute=_centre),
    Metric("energy", "energy in boxes", "higher", (0.0, 1.0), "box",
           "share of the map's positive mass inside the boxes",
           compute=lambda s: _metrics.energy_pointing_game(s.maps, s.mask)),
    Metric("mu_in", "mu_in", "higher", (0.0, 1.0), "box",
           "share of the map's absolute mass inside the boxes", same_as="energy",
           compute=lambda s: _metrics.mu_in(s.maps, s.mask)[0]),
    Metric("mu_in_w", "mu_in weighted", "higher", (0.0, math.inf), "box",
           "mu_in x image area / box area: 1 for a uniform map, above 1 when the map concentrates on the boxes",
           compute=lambda s: _metrics.mu_in(s.maps, s.mask)[1]),
    Metric("deletion_auc", "deletion AUC", "lower", (0.0, 1.0), "perturbation",
           "target probability as the most relevant pixels are deleted (area under the curve)",
           compute=_curve("deletion", _metrics.curve_auc)),
    Metric("deletion_aopc", "deletion AOPC", "higher", (-1.0, 1.0), "perturbation",
           "average drop of the target probability as the most relevant pixels are deleted",
           compute=_curve("deletion", _metrics.aopc)),
    Metric("deletion_lerf_auc", "deletion LeRF AUC", "higher", (0.0, 1.0), "perturbation",
           "target probability as the least relevant pixels are deleted first (LeRF)",
           compute=_curve("deletion_lerf", _metrics.curve_auc)),
    Metric("insertion_auc", "insertion AUC", "higher", (0.0, 1.0), "perturbation",
           "target probability as the most relevant pixels are restored into a blurred image",
           compute=_curve("insertion", _metrics.curve_auc)),
    Metric("insertion_lerf_auc", "insertion LeRF AUC", "lower", (0.0, 1.0), "perturbation",
           "target probability as the least relevant pixels are restored first (LeRF)",
           compute=_curve("insertion_lerf", _metrics.curve_auc)),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _ENTRIES}
BOX_METRICS: tuple[str, ...] = tuple(m.name for m in _ENTRIES if m.family == "box")
PERTURBATION_METRICS: tuple[str, ...] = tuple(m.name for m in _ENTRIES if m.family == "perturbation")


def metric(name: str) -> Metric:
    """The catalog entry of ``name``; a ``KeyError`` naming the known metrics otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None
