"""Shared fixtures: a small CNN for exact-math tests, real photos, the pretrained Lite0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ASSETS = Path(__file__).resolve().parents[1] / "assets"


class SmallCNN(nn.Module):
    """A ResNet-flavoured toy net: conv-bn-relu(inplace) blocks with a residual add."""

    def __init__(self, num_classes: int = 10, inplace: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        x = self.relu(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


def make_small_cnn(seed: int = 0, inplace: bool = True) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(inplace=inplace)
    with torch.no_grad():  # non-trivial BN statistics
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def small_cnn() -> SmallCNN:
    return make_small_cnn()


@pytest.fixture
def small_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=generator)


@pytest.fixture(scope="session")
def lite0():
    from sipgrad import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"chelsea": data.chelsea(), "coffee": data.coffee()}


@pytest.fixture
def asset_dir() -> Path:
    return ASSETS
