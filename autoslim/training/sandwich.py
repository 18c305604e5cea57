"""The sandwich rule with in-place distillation: one training step of a slimmable supernet.

US-Nets (Yu & Huang 2019, section 3) train, per batch, the largest config on the labels, the smallest and
``n - 2`` random configs (AutoSlim section 3.2: an independent uniform choice of channels per unit) against
the largest's detached softmax, accumulating gradients for one optimizer step. This module holds that step
and the subnet sampling; :mod:`autoslim.training.optim` holds the optimizer and schedules, and
:mod:`autoslim.training.supernet_training` runs them over epochs.
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.supernet import Supernet
from ..seeds import derive_seed

__all__ = ["subnet_rng", "sandwich_configs", "distillation_loss", "sandwich_step", "train_step"]



def subnet_rng(seed: int, rank: int, step: int) -> random.Random:
    """The generator of the random subnets of ``step`` on ``rank``: ranks draw as seeds ``seed + rank``."""
    return random.Random(derive_seed("subnets", seed + rank, step))


def sandwich_configs(supernet: Supernet, num_subnets: int, rng: random.Random) -> list[dict[str, int]]:
    """The configs of one batch: the largest, the smallest, then ``num_subnets - 2`` drawn from ``rng``."""
    if num_subnets < 2:
        raise ValueError(f"the sandwich rule needs at least 2 subnets (largest and smallest), got {num_subnets}")
    return [supernet.largest_config(), supernet.smallest_config(),
            *(supernet.sample_config(rng) for _ in range(num_subnets - 2))]


def distillation_loss(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """Cross-entropy against the largest subnet's softmax (in-place distillation); no gradient reaches the targets."""
    return F.cross_entropy(logits, soft_targets.detach())


def sandwich_step(model: nn.Module, supernet: Supernet, configs: list[Mapping[str, int]], images: Tensor,
                  labels: Tensor, *, label_smoothing: float = 0.1,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> Tensor:
    """Forward and backward every config of one batch; gradients accumulate in ``.grad``.

    ``model`` is the supernet or its DistributedDataParallel wrapper (``supernet`` is the module that
    holds the configs); with DDP, gradients are all-reduced only during the last backward pass. The first
    config is the teacher (trained on ``labels``); the others learn its detached softmax.

    Returns:
        The detached losses of the first two configs (the largest and smallest), as one device tensor.
    """
    no_sync = getattr(model, "no_sync", None)
    losses = []
    targets = None
    for i, config in enumerate(configs):
        supernet.set_config(config)
        last = i == len(configs) - 1
        with (contextlib.nullcontext() if last or no_sync is None else no_sync()):
            with autocast():
                logits = model(images)
                if targets is None:
                    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                    targets = logits.detach().float().softmax(1)
                else:
                    loss = distillation_loss(logits, targets)
            loss.backward()
        if i < 2:
            losses.append(loss.detach().float())
    return torch.stack(losses)


def train_step(supernet: Supernet, images: Tensor, labels: Tensor, *, rng: random.Random, num_subnets: int = 4,
               label_smoothing: float = 0.1, model: nn.Module | None = None) -> Tensor:
    """One sandwich-rule step in your own training loop: forward and backward the largest config on the labels,
    the smallest and ``num_subnets - 2`` random configs against the largest's predictions; gradients accumulate.

    Call ``optimizer.zero_grad()`` before and ``optimizer.step()`` after, as for any backward pass. The supernet
    is left at its largest config.

    Args:
        supernet: the supernet (from :func:`autoslim.convert`), in training mode.
        images, labels: one batch.
        rng: draws the random configs (``random.Random(seed)``; a different one per data-parallel rank).
        num_subnets: subnets per batch, at least 2.
        label_smoothing: of the largest config's loss.
        model: what to call instead of ``supernet`` (its DistributedDataParallel wrapper).

    Returns:
        The detached losses of the largest and smallest configs.
    """
    configs = sandwich_configs(supernet, num_subnets, rng)
    try:
        return sandwich_step(model if model is not None else supernet, supernet, configs, images, labels,
                             label_smoothing=label_smoothing)
    finally:
        supernet.set_config(configs[0])
