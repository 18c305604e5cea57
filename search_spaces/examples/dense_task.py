"""Slim a toy segmentation network to half its MACs, scored by pixel accuracy.

The sandwich training step and the greedy search take any output shape and any score: this encoder-decoder
gives per-pixel logits for 3 classes, is trained for a few steps on random masks, and is slimmed by the pixel
accuracy of each candidate config. A detection model would be scored by mAP the same way.

    python search_spaces/examples/dense_task.py
"""

import random

import torch
from torch import nn

import autoslim


class TinySegNet(nn.Module):  # an encoder-decoder with per-pixel logits for 3 classes
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                     nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(64, 32, 3, padding=1),
                                     nn.BatchNorm2d(32), nn.ReLU())
        self.classifier = nn.Conv2d(32, 3, 1)

    def forward(self, x):
        return self.classifier(self.decoder(self.encoder(x)))


supernet = autoslim.convert(TinySegNet(), input_size=32)
images, masks = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8, 32, 32))
optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9)
rng = random.Random(0)
supernet.train()
for _ in range(3):
    optimizer.zero_grad(set_to_none=True)
    autoslim.train_step(supernet, images, masks, rng=rng)  # per-pixel cross-entropy and distillation
    optimizer.step()


def pixel_accuracy(config):
    supernet.set_config(config)
    autoslim.recalibrate(supernet, [(images, masks)])
    supernet.eval()
    with torch.no_grad():
        return (supernet(images).argmax(1) == masks).float().mean().item()


half = supernet.cost(supernet.largest_config()).macs // 2
seg_steps = autoslim.greedy_slim(supernet, pixel_accuracy, flops=half)
print(f"{len(seg_steps) - 1} steps to {seg_steps[-1].macs:,} MACs, pixel accuracy {seg_steps[-1].accuracy:.3f}")
