"""An inference copy of a classifier with BatchNorm folded into the convolutions before it.

Perturbation metrics run a model forward thousands of times and never backward. In eval
mode a BatchNorm after a conv is an affine map per channel, so it can be folded into the
conv's weights and bias: y = s (W x + b - mu) + beta with s = gamma / sqrt(var + eps)
becomes (s W) x + (s (b - mu) + beta). One pass over every activation fewer per layer
(about 12% of Lite0's forward time on CPU, benchmarks/evaluate_speed.py).

Which BatchNorm follows which conv is read from the module tree: a conv and a BatchNorm
registered one after the other in the same parent, with matching channels (how
torchvision's ResNets, VGG-BN and EfficientNets and sipgrad's Lite0 are built). Registration
order does not prove data flow, so the copy is checked against the original on a random
batch, and the original is used when they disagree. The user's model is never modified.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for parent_name, parent in module.named_modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + conv_name, prefix + bn_name))
    return pairs


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s affine map into ``conv`` (torch's own ``fuse_conv_bn_weights``); the weights stay frozen."""
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight if bn.affine else None, bn.bias if bn.affine else None)
    conv.weight.copy_(weight)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)


def _set_module(root: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, leaf, replacement)


@torch.no_grad()
def fold_batchnorm(module: nn.Module, example: torch.Tensor, tolerance: float = 1e-3) -> nn.Module:
    """An eval-mode copy of ``module`` with BatchNorm folded into the preceding convs.

    Returns ``module`` itself (in whatever mode it is) when there is nothing to fold, and an
    unfolded eval-mode copy when the folded copy's output on ``example`` differs from the
    original's by more than ``tolerance`` times the output's scale (then a pair was not
    really conv-then-BatchNorm).
    """
    pairs = _conv_bn_pairs(module)
    if not pairs:
        return module
    reference = copy.deepcopy(module).eval()
    folded = copy.deepcopy(reference)
    for conv_name, bn_name in pairs:
        _fold(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        _set_module(folded, bn_name, nn.Identity())
    folded.requires_grad_(False)
    expected, actual = reference(example), folded(example)
    scale = expected.abs().max().clamp_min(1e-12)
    if actual.shape != expected.shape or ((actual - expected).abs().max() / scale) > tolerance:
        return reference
    return folded


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block and restore every submodule's flag after.

    Everything that runs a user's model for a result (explaining, calibrating, analysing)
    goes through this, so BatchNorm running statistics and dropout never change the
    model or the numbers.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
