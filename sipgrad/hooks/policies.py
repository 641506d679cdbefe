"""Gradient filters of SIP, and the one registry that names them.

A *filter* sees, at one hooked conv layer, the activation A (the conv output), the
gradient G arriving there and each row's explained class, and returns the gradient to
pass on. Most filters are *channel policies*: they pick, per sample, the channels that
carry the explanation (a boolean B x C mask) and hand it to the SIP filter of
``sipgrad.hooks.filter`` (zero or damp the others and rescale, which keeps Var(sum of kept) +
Var(sum of pruned), not the variance of the unfiltered sum: see docs/sip.md, "What the
rescaling conserves"). ``POLICIES`` maps each spec name (``topq``, ``cls``, ...) to its
class; adding a policy is one entry.

One convention for shares of channels everywhere: a share ``q`` of ``C`` channels is
``channel_count(q, C) = max(1, floor(q * C))`` channels (the ParchGrad reference's
``int(q * C)``), for data-free fractions and for the quantile of ``cls``/``ins`` alike.

Note on in-place activations: ``A`` is the conv output. When an in-place ReLU follows
the conv directly (torchvision VGG), negative entries read as 0; every score below either
applies ReLU to A or multiplies A by G, which is already 0 wherever the ReLU clipped, so the
scores are the same as with an out-of-place ReLU. After any other in-place op on the conv
output (LeakyReLU, SiLU, a residual ``+=``) the hooks recompute A (``sipgrad.hooks.core``).
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import ClassVar

import torch

from sipgrad.calibration.stats import SIPStatistics
from sipgrad.errors import SipgradError
from sipgrad.hooks.filter import filter_gradient


def channel_count(share: float, channels: int) -> int:
    """How many of ``channels`` a share ``share`` in (0, 1] keeps: max(1, floor(share * C)).

    The small tolerance keeps shares such as 0.3 * 10 (2.9999999999999996 in floating point) at 3.
    """
    return min(channels, max(1, math.floor(share * channels + 1e-9)))


def _keep_all_if_empty(keep: torch.Tensor) -> torch.Tensor:
    return keep | ~keep.any(dim=1, keepdim=True)


def _keep_top(scores: torch.Tensor, share: float) -> torch.Tensor:
    index = scores.topk(channel_count(share, scores.shape[1]), dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)


class GradientFilter(abc.ABC):
    """Replaces the gradient at a hooked layer's output (B x C x H x W), per sample.

    Class attributes describe the filter for the registry: ``name`` (its spec name),
    ``argument`` (what ``name:X`` sets: ``fraction``, ``quantile``, ``rank`` or ``None``),
    ``needs_statistics`` (calibration statistics required), ``needs_targets`` (reads
    each row's explained class) and ``reads_activation`` (reads A, not only G).
    """

    name: ClassVar[str] = "filter"
    argument: ClassVar[str | None] = None
    needs_statistics: ClassVar[bool] = False
    needs_targets: ClassVar[bool] = False
    reads_activation: ClassVar[bool] = True

    @abc.abstractmethod
    def apply(self, layer: str, activation: torch.Tensor, grad: torch.Tensor,
              targets: torch.Tensor | None) -> torch.Tensor:
        """The gradient to pass on."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config, statistics: SIPStatistics | None) -> "GradientFilter":
        """Build the filter from a ``SIPConfig`` (and statistics, for those that need them)."""

    def describe(self) -> str:
        return self.name


class ChannelPolicy(GradientFilter):
    """Decides, per sample, which channels of a layer carry the explanation; SIP does the rest."""

    def __init__(self, gamma: float = math.inf, variance_conservation: bool = True) -> None:
        self.gamma = gamma
        self.variance_conservation = variance_conservation
        self.last_keep: dict[str, torch.Tensor] = {}

    @abc.abstractmethod
    def keep_mask(self, layer: str, activation: torch.Tensor, grad: torch.Tensor,
                  targets: torch.Tensor | None) -> torch.Tensor:
        """Boolean B x C mask of the channels to keep."""

    def apply(self, layer, activation, grad, targets):
        keep = self.keep_mask(layer, activation, grad, targets)
        self.last_keep[layer] = keep
        return filter_gradient(grad, keep, self.gamma, self.variance_conservation)


class _PValuePolicy(ChannelPolicy):
    """Shared thresholding of per-channel p-values: alpha or quantile, plus the Shapiro gate.

    Convention (pinned by tests; docs/sip.md explains it): a channel is kept when its
    p-value is ``<=`` the cut, so a quantile ``q`` keeps exactly ``channel_count(q, C)``
    channels when p-values are distinct. A NaN p-value (a *dead* channel: zero
    calibration variance and an activation at its mean) is never kept and ranks last, so
    dead channels never move the quantile cut.
    """

    argument = "quantile"
    needs_statistics = True

    def __init__(self, statistics: SIPStatistics, alpha: float = 0.05, quantile: float | None = None,
                 shapiro_threshold: float | None = 0.05, gamma: float = math.inf,
                 variance_conservation: bool = True) -> None:
        super().__init__(gamma, variance_conservation)
        self.statistics = statistics
        self.alpha = alpha
        self.quantile = quantile
        self.shapiro_threshold = shapiro_threshold

    @classmethod
    def from_config(cls, config, statistics):
        return cls(statistics, alpha=config.alpha, quantile=config.quantile,
                   shapiro_threshold=config.shapiro_threshold if config.shapiro_gate else None,
                   gamma=config.gamma, variance_conservation=config.variance_conservation)

    def _threshold(self, layer: str, pvalues: torch.Tensor) -> torch.Tensor:
        stats = self.statistics.tensors(layer, pvalues.device)
        live = ~torch.isnan(pvalues)
        ranked = torch.where(live, pvalues, torch.full_like(pvalues, math.inf))
        if self.quantile is not None:
            k = channel_count(self.quantile, pvalues.shape[1])
            cut = ranked.kthvalue(k, dim=1, keepdim=True).values
            keep = live & (ranked <= cut)
        else:
            keep = live & (ranked <= self.alpha)
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
    needs_targets = True

    def keep_mask(self, layer, activation, grad, targets):
        if targets is None:
            raise SipgradError("the cls policy needs each row's explained class, read from the gradient at the "
                               "model's logits; the model's output must be a B x K tensor of logits")
        table = self.statistics.tensors(layer, grad.device)["class_pvalues"]  # C x K
        return self._threshold(layer, table[:, targets].T)


class InstancePolicy(_PValuePolicy):
    """ParchGrad's instance-wise policy: keep channels unusually active for this image.

    p = 1 - Phi((GAP(ReLU(A)) - mean) / std) with the calibration mean and std. A channel
    with zero calibration std gives p = 0 when active above its mean (infinitely
    unusual) and NaN when at its mean (dead: never kept), as in the reference code.
    """

    name = "ins"

    def keep_mask(self, layer, activation, grad, targets):
        stats = self.statistics.tensors(layer, grad.device)
        gap = activation.detach().clamp_min(0).mean(dim=(2, 3))
        z = (gap - stats["mean"]) / stats["std"]
        pvalues = 0.5 * torch.erfc(z / math.sqrt(2.0))  # 1 - Phi(z); erfc(+inf) = 0, erfc(nan) = nan
        return self._threshold(layer, pvalues)


class _TopFractionPolicy(ChannelPolicy):
    """Data-free: keep the ``channel_count(q, C)`` highest-scoring channels of each sample."""

    argument = "fraction"

    def __init__(self, fraction: float, gamma: float = math.inf, variance_conservation: bool = True) -> None:
        if not 0.0 < fraction <= 1.0:
            raise SipgradError(f"{self.name}: fraction must be in (0, 1], got {fraction}")
        super().__init__(gamma, variance_conservation)
        self.fraction = fraction

    @classmethod
    def from_config(cls, config, statistics):
        return cls(config.fraction, gamma=config.gamma, variance_conservation=config.variance_conservation)

    @abc.abstractmethod
    def scores(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """B x C channel scores; higher means more relevant."""

    def keep_mask(self, layer, activation, grad, targets):
        return _keep_top(self.scores(activation.detach(), grad), self.fraction)

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


def truncate_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The rank-``rank`` truncated SVD of each matrix in a batch (B x C x N).

    On the CPU the top singular subspace comes from a small symmetric ``eigh``
    (``_truncate_rank_eigh``). On CUDA, batched ``eigh`` works through these small matrices
    one by one (``pca:8`` ran at a ninth of plain ``grad``'s speed on an H200), so the
    subspace comes from cuSOLVER's batched SVD for tall matrices instead
    (``_truncate_rank_cuda``).
    """
    if matrix.is_cuda:
        return _truncate_rank_cuda(matrix, rank)
    return _truncate_rank_eigh(matrix, rank)


def _truncate_rank_eigh(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """``truncate_rank`` through the Gram matrix: the CPU's route, and the GPU's fallback.

    The top singular subspace is the top eigenspace of the Gram matrix on the smaller side
    (N x N when C >= N): one batched product and one small symmetric ``eigh``, then a
    projection. Exact up to rounding (tested against ``numpy.linalg.svd``) and 3.1x faster
    than ``torch.linalg.svd`` on Lite0's nine hooked shapes on the CPU
    (``benchmarks/cuda_eigh.py --cpu``, docs/benchmarks.md).
    """
    if matrix.shape[1] >= matrix.shape[2]:
        _, vectors = torch.linalg.eigh(matrix.transpose(1, 2) @ matrix)  # ascending eigenvalues
        top = vectors[:, :, -rank:]
        return (matrix @ top) @ top.transpose(1, 2)
    _, vectors = torch.linalg.eigh(matrix @ matrix.transpose(1, 2))
    top = vectors[:, :, -rank:]
    return top @ (top.transpose(1, 2) @ matrix)


def _truncate_rank_cuda(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """``truncate_rank`` on a GPU: the top singular vectors from cuSOLVER's batched ``gesvda``.

    ``gesvda`` decomposes a whole batch of tall matrices in one call; on Lite0's nine SIP
    layers at batch 64 it took 33 ms against 957 ms for batched ``eigh`` on the same GPU,
    and came closer to float64 (relative error 2.4e-7 against 1.3e-4), measured by
    ``benchmarks/cuda_eigh.py`` on an H200 (docs/benchmarks.md). It is cuSOLVER's
    approximate method: when it reports a failure, or returns non-finite vectors without
    reporting one (it has done so for a square zero matrix, pytorch#136085), the ``eigh``
    route is taken instead. The finiteness check costs little: the SVD has already waited
    for the GPU to read cuSOLVER's status.
    """
    tall = matrix.shape[1] >= matrix.shape[2]
    with warnings.catch_warnings():  # torch advises redoing a failed SVD with another driver: done here
        warnings.simplefilter("ignore", UserWarning)
        try:
            # The right singular vectors of the tall orientation span the smaller side's top subspace.
            _, _, vh = torch.linalg.svd(matrix if tall else matrix.transpose(1, 2), full_matrices=False,
                                        driver="gesvda")
        except torch.linalg.LinAlgError:
            return _truncate_rank_eigh(matrix, rank)
    if not bool(torch.isfinite(vh).all()):
        return _truncate_rank_eigh(matrix, rank)
    top = vh[:, :rank].transpose(1, 2)
    return (matrix @ top) @ top.transpose(1, 2) if tall else top @ (top.transpose(1, 2) @ matrix)


class LowRankFilter(GradientFilter):
    """``pca:K``: replace each sample's channel-gradient matrix G (C x HW) by its rank-K SVD truncation.

    The K leading singular directions are where the channels' gradients agree (their
    shared spatial patterns); the rest, example-specific interference, is dropped. With
    variance conservation the result is rescaled so the channel sum keeps exactly the
    variance over positions that the unfiltered channel sum had. (The channel policies'
    SIP filter conserves something else, Var(sum of kept) + Var(sum of pruned), which
    differs from the unfiltered sum's variance by twice the two sums' covariance.) Batched
    over the whole batch (``truncate_rank``), no Python loop.
    """

    name = "pca"
    argument = "rank"
    reads_activation = False

    def __init__(self, rank: int, variance_conservation: bool = True, eps: float = 1e-13) -> None:
        if rank < 1 or rank != int(rank):
            raise SipgradError(f"pca: rank must be a whole number >= 1, got {rank}")
        self.rank = int(rank)
        self.variance_conservation = variance_conservation
        self.eps = eps

    @classmethod
    def from_config(cls, config, statistics):
        return cls(config.rank, variance_conservation=config.variance_conservation)

    def apply(self, layer, activation, grad, targets):
        batch, channels, height, width = grad.shape
        matrix = grad.reshape(batch, channels, height * width)
        k = min(self.rank, channels, height * width)
        if k == min(channels, height * width):
            return grad  # full rank: nothing to truncate
        work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()  # needs 32+ bits
        low = truncate_rank(work, k)
        if self.variance_conservation:
            before = work.sum(dim=1)
            after = low.sum(dim=1)
            spread = (lambda x: x.var(dim=1)) if height * width > 1 else (lambda x: x[:, 0].abs())
            low = low * torch.sqrt((spread(before) + self.eps) / (spread(after) + self.eps))[:, None, None]
        return low.to(grad.dtype).reshape(grad.shape)

    def describe(self) -> str:
        return f"{self.name}:{self.rank}"


POLICIES: dict[str, type[GradientFilter]] = {policy.name: policy for policy in (
    ClassPolicy, InstancePolicy, ContributionPolicy, AbsoluteContributionPolicy, ActivationPolicy, LowRankFilter)}
STATISTICAL_POLICIES = {name: p for name, p in POLICIES.items() if p.needs_statistics}
DATA_FREE_POLICIES = {name: p for name, p in POLICIES.items() if p.argument == "fraction"}
