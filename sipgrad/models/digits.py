"""Small CNNs for the cluttered-digits benchmark (64 x 64 inputs, 10 classes).

A ResNet-style and a VGG-style network, sized to train on a CPU in minutes
(``benchmarks/train_cluttered_digits.py``) so the paper's whole pipeline (train,
calibrate, evaluate with and without SIP) runs offline. The ResNet blocks are
torchvision's ``BasicBlock``, with its in-place ReLUs.
"""

from __future__ import annotations

from torch import nn

from sipgrad.models.classes import ClassNames
from sipgrad.models.preprocessing import Preprocessing

DIGIT_CLASSES = ClassNames(tuple(str(i) for i in range(10)))
DIGITS_PREPROCESSING = Preprocessing(input_size=64, resize_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)


class DigitsResNet(nn.Sequential):
    """Stride-2 conv stem, three stages of two BasicBlocks (16, 32/2, 64/2 channels), GAP, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        # Imported here: torchvision costs ~170 MB of resident memory, needed only to build this model.
        from torchvision.models.resnet import BasicBlock

        def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
            down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            return nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout))

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        self.layer1, self.layer2, self.layer3 = stage(16, 16, 1), stage(16, 32, 2), stage(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)


class DigitsVGG(nn.Sequential):
    """VGG-BN style: pairs of 3x3 conv + BN + ReLU (16, 32, 64 channels) with max pooling, GAP, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for width in (16, 32, 64):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = width
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
