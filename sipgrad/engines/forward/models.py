"""The small models of the forward-gradient experiments, one registry: ``MODELS[name](image_shape, classes)``.

Small on purpose: forward gradients lose quality as the parameter count n grows (cosine
~ sqrt(K / n)), and these models keep the experiments on a laptop CPU. The MLP's default
64-128-10 shape on digits is the prototype the research notes measured.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sipgrad.engines.forward.binary import BinaryConv2d, BinaryLinear
from sipgrad.errors import SipgradError

ImageShape = tuple[int, int, int]


class GlobalAveragePool(nn.Module):
    """Mean over the spatial dimensions, N x C x H x W -> N x C.

    Same as ``AdaptiveAvgPool2d(1)`` + flatten, but a plain reduction: torch has no vmap
    batching rule for adaptive pooling's forward-mode derivative and falls back to a slow
    per-direction loop.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def mlp(image_shape: ImageShape, classes: int = 10, hidden: int = 128, binary: bool = False) -> nn.Module:
    """Flatten -> hidden (ReLU, or hardtanh when binary) -> classes."""
    features = image_shape[0] * image_shape[1] * image_shape[2]
    linear = BinaryLinear if binary else nn.Linear
    activation = nn.Hardtanh() if binary else nn.ReLU()
    return nn.Sequential(nn.Flatten(), linear(features, hidden), activation, linear(hidden, classes))


def cnn(image_shape: ImageShape, classes: int = 10, width: int = 16, binary: bool = False,
        batchnorm: bool = False) -> nn.Module:
    """Two 3 x 3 conv blocks (the first pooled 2 x 2), global average pooling, a linear classifier."""
    conv = BinaryConv2d if binary else nn.Conv2d
    linear = BinaryLinear if binary else nn.Linear

    def activation() -> nn.Module:
        return nn.Hardtanh() if binary else nn.ReLU()

    def norm(channels: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(channels)] if batchnorm else []

    return nn.Sequential(
        conv(image_shape[0], width, 3, padding=1), *norm(width), activation(), nn.MaxPool2d(2),
        conv(width, 2 * width, 3, padding=1), *norm(2 * width), activation(),
        GlobalAveragePool(), linear(2 * width, classes))


MODELS: dict[str, Callable[[ImageShape, int], nn.Module]] = {
    "mlp": lambda shape, classes: mlp(shape, classes),
    "cnn": lambda shape, classes: cnn(shape, classes),
    "cnn-bn": lambda shape, classes: cnn(shape, classes, batchnorm=True),
    "binary-mlp": lambda shape, classes: mlp(shape, classes, binary=True),
    "binary-cnn": lambda shape, classes: cnn(shape, classes, binary=True),
}


def build_model(name: str, image_shape: ImageShape, classes: int = 10, seed: int = 0) -> nn.Module:
    """A freshly initialised model from ``MODELS``, reproducible from ``seed``."""
    if name not in MODELS:
        raise SipgradError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](image_shape, classes)
