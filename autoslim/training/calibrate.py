"""BatchNorm recalibration and evaluation (US-Nets section 3.3; AutoSlim section 3.2).

A weight-shared network trains its BatchNorm layers with batch statistics, but its running statistics
(updated by every subnet in turn) fit no particular config. Before a config is evaluated its statistics
are therefore recomputed: reset, then a cumulative average (``momentum=None``) over a few training
batches, without gradients, with only the BatchNorm layers in training mode.

Both functions are generic: they work on a :class:`~autoslim.network.supernet.Supernet` at its current config
(slim BatchNorm layers update the prefix of their buffers that the config uses) and on any plain model.
Batches are ``(images, labels)`` already on the model's device, e.g. from
:meth:`autoslim.data.DataBundle.batches`; wrap the calls in ``torch.autocast`` for mixed precision.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["recalibrate", "evaluate", "batchnorm_layers"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (slim ones included)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_batches: int | None = None) -> int:
    """Recompute the running statistics of every BatchNorm layer of ``model`` on ``batches``.

    The statistics are reset and then set to the cumulative average over the first ``num_batches``
    batches (all of them when None). Only the BatchNorm layers run in training mode, so dropout stays
    off; the training flags and momenta of all modules are restored afterwards. Parameters are untouched.

    Returns:
        The number of batches used.

    Raises:
        ValueError: when ``batches`` is empty (the statistics would be left reset).
    """
    layers = batchnorm_layers(model)
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in layers]
    used = 0
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative moving average
            layer.train()
        for images, _ in islice(batches, num_batches):
            model(images)
            used += 1
    finally:
        for module, training in modes:
            module.training = training
        for layer, momentum in momenta:
            layer.momentum = momentum
    if used == 0 and layers:
        raise ValueError("BatchNorm recalibration got no batches")
    return used


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` (in eval mode) over ``batches``.

    The totals stay on the device until the end, so there is one host sync per call. The model's
    training flags are restored afterwards.

    Raises:
        ValueError: when ``batches`` is empty.
    """
    modes = [(m, m.training) for m in model.modules()]
    correct: Tensor | int = 0
    loss: Tensor | float = 0.0
    count = 0
    try:
        model.eval()
        for images, labels in batches:
            logits = model(images).float()
            correct = correct + (logits.argmax(1) == labels).sum()
            loss = loss + F.cross_entropy(logits, labels, reduction="sum")
            count += len(labels)
    finally:
        for module, training in modes:
            module.training = training
    if count == 0:
        raise ValueError("evaluate got no batches")
    return float(correct) / count, float(loss) / count
