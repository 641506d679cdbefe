"""The SIP gradient filter: keep some channels, zero (or damp) the rest, rescale so Var(kept) + Var(pruned) is kept.

For one sample and one hooked layer, with G the gradient at the conv output (C x H x W)
and a split of the channels into kept K and pruned P:

    M = Var_hw(sum_{c in K} G_c) + eps,   N = Var_hw(sum_{c in P} G_c) + eps
    (for 1 x 1 maps the absolute value of the sums replaces the variance)

    gamma = inf:  G_K *= sqrt((M + N) / M),  G_P = 0
    gamma < inf:  g = gamma * sqrt(N / M),  b = sqrt((M + N) / (M g^2 + N)),
                  G_K *= g * b,  G_P *= b
    without variance conservation b = 1 (and the kept scale is 1 for gamma = inf).

If K or P is empty the gradient passes unchanged. Everything is computed for the
whole batch at once: no Python loop over samples and no host synchronisation, and a
sample's result depends only on its own gradient and mask.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-13


def channel_scales(grad: torch.Tensor, keep: torch.Tensor, gamma: float = math.inf,
                   variance_conservation: bool = True, eps: float = EPS) -> torch.Tensor:
    """Per-sample, per-channel multipliers (B x C) that implement the SIP filter."""
    if grad.dim() != 4 or keep.shape != grad.shape[:2]:
        raise ValueError(f"expected grad B x C x H x W and keep B x C, got {tuple(grad.shape)}, {tuple(keep.shape)}")
    keep_f = keep.to(grad.dtype)
    # Sum of kept and of pruned channel gradients in one batched product: B x 2 x HW.
    groups = torch.stack((keep_f, 1.0 - keep_f), dim=1)
    sums = torch.bmm(groups, grad.flatten(2))
    spread = sums.var(dim=2) if sums.shape[2] > 1 else sums[:, :, 0].abs()
    kept_var, pruned_var = spread[:, 0] + eps, spread[:, 1] + eps

    if math.isinf(gamma):
        kept_scale = torch.sqrt((kept_var + pruned_var) / kept_var) if variance_conservation else torch.ones_like(kept_var)
        pruned_scale = torch.zeros_like(kept_var)
    else:
        g = gamma * torch.sqrt(pruned_var / kept_var)
        b = (torch.sqrt((kept_var + pruned_var) / (kept_var * g * g + pruned_var))
             if variance_conservation else torch.ones_like(kept_var))
        kept_scale, pruned_scale = g * b, b

    kept_count = keep.sum(dim=1)
    split = (kept_count > 0) & (kept_count < keep.shape[1])
    one = torch.ones_like(kept_scale)
    kept_scale = torch.where(split, kept_scale, one)
    pruned_scale = torch.where(split, pruned_scale, one)
    return torch.where(keep, kept_scale[:, None], pruned_scale[:, None])


def filter_gradient(grad: torch.Tensor, keep: torch.Tensor, gamma: float = math.inf,
                    variance_conservation: bool = True, eps: float = EPS) -> torch.Tensor:
    """Apply the SIP filter to ``grad`` (B x C x H x W) with channel mask ``keep`` (B x C, bool)."""
    return grad * channel_scales(grad, keep, gamma, variance_conservation, eps)[:, :, None, None]
