"""An example of bringing your own model: a plain ``nn.Module`` in a file, no autoslim imports.

    autoslim spaces --units search_spaces/examples/custom_cnn.py:build
    autoslim cost search_spaces/examples/custom_cnn.py:build --width 1.0 --input-size 32
    autoslim train-supernet --space search_spaces/examples/custom_cnn.py:build --dataset cifar10 ...

autoslim traces it with torch.fx and finds its channel units: the residual block ties the stem to the block's
output, the two concatenated branches stay separately slimmable, and the squeeze-and-excitation gate ties
its expansion to the channels it scales.
"""

import torch
from torch import nn


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN with an identity shortcut."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * gate


class CustomCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.block = Block(width, 2 * width)
        self.left = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.right = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width),
                                   nn.ReLU(inplace=True))
        self.merge = nn.Sequential(nn.Conv2d(3 * width, 4 * width, 3, padding=1, bias=False), nn.BatchNorm2d(4 * width),
                                   nn.ReLU(inplace=True))
        self.se = SqueezeExcite(4 * width, width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.se(self.merge(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def build(num_classes: int = 10) -> nn.Module:
    return CustomCNN(num_classes=num_classes)
