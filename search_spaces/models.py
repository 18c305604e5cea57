"""Plain model definitions for the search spaces torchvision does not provide.

Each builder takes keyword-only ``width_mult`` and ``num_classes`` and scales every channel count with
``make_divisible(c * width_mult, 8)``, so width ``w`` is the network its family calls width ``w``.
These are ordinary modules: nothing in them knows about slimming.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import MobileNetV2

from autoslim.network.units import make_divisible

__all__ = ["mobilenet_v1", "resnet_cifar", "mobilenet_v2_cifar", "digits_cnn", "MobileNetV1", "ResNetCifar", "DigitsCNN"]


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017): a 3x3 stem and 13 depthwise-separable blocks; 569M MACs at 1.0x, 224."""

    _SETTING = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

    def __init__(self, *, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        channels = make_divisible(32 * width_mult)
        layers = [_conv_bn_relu(in_channels, channels, stride=2)]
        for base, stride in self._SETTING:
            out = make_divisible(base * width_mult)
            layers.append(nn.Sequential(
                _conv_bn_relu(channels, channels, stride=stride, groups=channels),
                _conv_bn_relu(channels, out, kernel=1),
            ))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != cout:  # projection shortcut (option B): keeps every tensor slimmable
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class ResNetCifar(nn.Module):
    """The CIFAR ResNets of He et al. 2016 (depth 6n+2; 16/32/64 channels at 1.0x), projection shortcuts."""

    def __init__(self, *, depth: int = 20, width_mult: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        widths = [make_divisible(c * width_mult) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            layers = []
            for j in range(blocks):
                layers.append(_BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DigitsCNN(nn.Module):
    """A small CNN sized for scikit-learn's 8x8 digits: two 8x8 convs, then a 4x4 stage with a residual block."""

    def __init__(self, *, width_mult: float = 1.0, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2, c3 = (make_divisible(c * width_mult, 4) for c in (16, 32, 64))
        self.stem = _conv_bn_relu(in_channels, c1)
        self.conv2 = _conv_bn_relu(c1, c2)
        self.conv3 = _conv_bn_relu(c2, c3, stride=2)
        self.block = nn.Sequential(_conv_bn_relu(c3, c3), nn.Conv2d(c3, c3, 3, 1, 1, bias=False), nn.BatchNorm2d(c3))
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3(self.conv2(self.stem(x)))
        x = self.relu(x + self.block(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def mobilenet_v1(*, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(width_mult=width_mult, num_classes=num_classes, in_channels=in_channels)


def resnet_cifar(*, depth: int = 20, width_mult: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(depth=depth, width_mult=width_mult, num_classes=num_classes, in_channels=in_channels)


def mobilenet_v2_cifar(*, width_mult: float = 1.0, num_classes: int = 10) -> MobileNetV2:
    """torchvision's MobileNetV2 with CIFAR strides: a stride-1 stem and stride 1 in the 24-channel stage."""
    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting)
    model.features[0][0].stride = (1, 1)
    return model


def digits_cnn(*, width_mult: float = 1.0, num_classes: int = 10, in_channels: int = 1) -> DigitsCNN:
    return DigitsCNN(width_mult=width_mult, num_classes=num_classes, in_channels=in_channels)
