"""Channel policies: which channels of a hooked layer SIP keeps for each sample.

A policy returns a boolean mask (B x C) from the layer's activation A (the conv output),
its gradient G and the explained targets. Statistical policies (``cls``, ``ins``) need
calibration statistics (``sipgrad calibrate``); the data-free ones need nothing.

Note on in-place activations: ``A`` is the conv output as autograd keeps it. When an
in-place ReLU follows the conv directly (torchvision VGG), negative entries read as 0;
every score below either applies ReLU to A or multiplies A by G, which is already 0
wherever the ReLU clipped, so the scores are the same as with an out-of-place ReLU.
"""

from __future__ import annotations

import abc
import math

import torch

from sipgrad.calibration.stats import SIPStatistics
from sipgrad.errors import SipgradError


def _keep_all_if_empty(keep: torch.Tensor) -> torch.Tensor:
    return keep | ~keep.any(dim=1, keepdim=True)


def _keep_top_k(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    channels = scores.shape[1]
    k = min(channels, max(1, math.ceil(fraction * channels)))
    index = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)


class ChannelPolicy(abc.ABC):
    """Decides, per sample, which channels of a layer carry the explanation."""

    name: str = "policy"
    needs_statistics: bool = False

    @abc.abstractmethod
    def keep_mask(self, layer: str, activation: torch.Tensor, grad: torch.Tensor,
                  targets: torch.Tensor | None) -> torch.Tensor:
        """Boolean B x C mask of the channels to keep."""

    def describe(self) -> str:
        return self.name


class _PValuePolicy(ChannelPolicy):
    """Shared thresholding of per-channel p-values: alpha or quantile, plus the Shapiro gate."""

    needs_statistics = True

    def __init__(self, statistics: SIPStatistics, alpha: float = 0.05, quantile: float | None = None,
                 shapiro_threshold: float | None = 0.05) -> None:
        self.statistics = statistics
        self.alpha = alpha
        self.quantile = quantile
        self.shapiro_threshold = shapiro_threshold

    def _threshold(self, layer: str, pvalues: torch.Tensor) -> torch.Tensor:
        stats = self.statistics.tensors(layer, pvalues.device)
        if self.quantile is not None:
            k = max(1, int(self.quantile * pvalues.shape[1]))
            cut = pvalues.kthvalue(k, dim=1, keepdim=True).values
            keep = pvalues <= cut
        else:
            keep = pvalues <= self.alpha
        if self.shapiro_threshold is not None:
            keep = keep & (stats["shapiro"] < self.shapiro_threshold)[None, :]
        return _keep_all_if_empty(keep)

    def describe(self) -> str:
        rule = f"quantile={self.quantile}" if self.quantile is not None else f"alpha={self.alpha}"
        gate = f", shapiro<{self.shapiro_threshold}" if self.shapiro_threshold is not None else ""
        return f"{self.name}({rule}{gate})"


class ClassPolicy(_PValuePolicy):
    """ParchGrad's class-wise policy: keep channels significantly more active for the target class."""

    name = "cls"

    def keep_mask(self, layer, activation, grad, targets):
        if targets is None:
            raise SipgradError("the cls policy needs the target class of every sample")
        table = self.statistics.tensors(layer, grad.device)["class_pvalues"]  # C x K
        return self._threshold(layer, table[:, targets].T)


class InstancePolicy(_PValuePolicy):
    """ParchGrad's instance-wise policy: keep channels unusually active for this image."""

    name = "ins"

    def keep_mask(self, layer, activation, grad, targets):
        stats = self.statistics.tensors(layer, grad.device)
        gap = activation.detach().clamp_min(0).mean(dim=(2, 3))
        z = (gap - stats["mean"]) / stats["std"].clamp_min(1e-12)
        pvalues = 0.5 * torch.erfc(z / math.sqrt(2.0))  # 1 - Phi(z)
        return self._threshold(layer, pvalues)


class _TopFractionPolicy(ChannelPolicy):
    """Data-free: keep the ceil(q*C) highest-scoring channels of each sample."""

    def __init__(self, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise SipgradError(f"{self.name}: fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    @abc.abstractmethod
    def scores(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """B x C channel scores; higher means more relevant."""

    def keep_mask(self, layer, activation, grad, targets):
        return _keep_top_k(self.scores(activation.detach(), grad), self.fraction)

    def describe(self) -> str:
        return f"{self.name}:{self.fraction:g}"


class ContributionPolicy(_TopFractionPolicy):
    """``topq:Q``: score_c = mean_hw(A_c * G_c), the channel's first-order contribution to the target."""

    name = "topq"

    def scores(self, activation, grad):
        # A contraction instead of (A * G).mean(): no B x C x H x W temporary on the hot path.
        # (torch.linalg.vecdot is faster on CPU but multiplies first: measured +110 MiB peak on
        # VGG16 at batch 16, because the first hooks run when backward's memory use peaks.)
        return torch.einsum("bchw,bchw->bc", activation, grad) / (grad.shape[2] * grad.shape[3])


class AbsoluteContributionPolicy(_TopFractionPolicy):
    """``absq:Q``: score_c = mean_hw |A_c * G_c|, contribution regardless of sign."""

    name = "absq"

    def scores(self, activation, grad):
        return (activation * grad).abs().mean(dim=(2, 3))


class ActivationPolicy(_TopFractionPolicy):
    """``act:Q``: score_c = GAP(ReLU(A_c)), the most active channels (ignores the class)."""

    name = "act"

    def scores(self, activation, grad):
        return activation.clamp_min(0).mean(dim=(2, 3))


DATA_FREE_POLICIES = {p.name: p for p in (ContributionPolicy, AbsoluteContributionPolicy, ActivationPolicy)}
STATISTICAL_POLICIES = {p.name: p for p in (ClassPolicy, InstancePolicy)}
