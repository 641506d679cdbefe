"""Small classifiers for the gradient-structure experiments on digits and MNIST.

The experiments need per-example gradients of every parameter, thousands of times, on a
CPU: so the models are tiny, and they have **no BatchNorm**. Batch norm in training mode
mixes the examples of a batch (each output depends on the batch statistics), so the
"gradient of one example" is not defined by the example alone; a model that has it must run
in eval mode (running statistics) to be analysed per example.

``SMALL_MODELS`` is the registry: adding a model is one entry, a function
``(image_shape, classes) -> nn.Module``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sipgrad.errors import SipgradError


def make_mlp(image_shape: tuple[int, int, int], classes: int = 10, hidden: int = 64) -> nn.Module:
    """Flatten -> Linear(D, hidden) -> ReLU -> Linear(hidden, classes)."""
    features = int(torch.tensor(image_shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def make_cnn(image_shape: tuple[int, int, int], classes: int = 10, width: int = 16) -> nn.Module:
    """Two 3 x 3 convs (the first followed by 2 x 2 max-pooling), a 2 x 2 average pool, a linear head.

    The adaptive pool makes the same model work on 8 x 8 digits and 28 x 28 MNIST."""
    channels = image_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 4, classes))


SMALL_MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": make_mlp, "cnn": make_cnn}


def small_model(name: str, image_shape: tuple[int, int, int], classes: int = 10, seed: int = 0) -> nn.Module:
    """Build the registered model ``name`` with weights drawn reproducibly from ``seed``."""
    if name not in SMALL_MODELS:
        raise SipgradError(f"unknown model {name!r}; choose from {', '.join(SMALL_MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SMALL_MODELS[name](tuple(image_shape), classes)
