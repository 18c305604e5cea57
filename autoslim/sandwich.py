"""The sandwich rule with in-place distillation: one training step of a slimmable supernet.

US-Nets (Yu & Huang 2019, section 3) train, per batch, the largest config on the labels, the smallest and
``n - 2`` random configs (AutoSlim section 3.2: an independent uniform choice of channels per unit) against
the largest's detached softmax, accumulating gradients for one optimizer step. This module holds that step,
the subnet sampling, the optimizer (SGD, no weight decay on BatchNorm and biases) and the warm-up + cosine
schedule; :mod:`autoslim.train` runs them over epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .settings import SCHEDULES, TrainSettings
from .supernet import Supernet

__all__ = ["derive_seed", "subnet_rng", "sandwich_configs", "distillation_loss", "sandwich_step", "train_step", "WarmupCosine",
           "OneCycle", "lr_factor", "build_optimizer"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that depends on every part (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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


# -- optimizer and schedule ----------------------------------------------------------------------


class WarmupCosine:
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to 0 (``LambdaLR``; saved with it)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))


class OneCycle:
    """Learning-rate factor per step of a one-cycle schedule (Smith 2018, as ``torch.optim.lr_scheduler.OneCycleLR``
    with a fixed momentum): from ``1 / start_div`` up to 1 by half a cosine over the first ``peak_at`` of the
    steps, then down to ``1 / end_div`` by half a cosine."""

    def __init__(self, total_steps: int, *, peak_at: float = 0.15, start_div: float = 25.0, end_div: float = 1e4) -> None:
        self.total_steps = int(total_steps)
        self.peak_step = max(1, round(peak_at * self.total_steps))
        self.start = 1.0 / start_div
        self.end = 1.0 / end_div

    def __call__(self, step: int) -> float:
        if step < self.peak_step:
            return self.start + (1.0 - self.start) * 0.5 * (1.0 - math.cos(math.pi * step / self.peak_step))
        span = max(1, self.total_steps - self.peak_step)
        progress = min(1.0, (step - self.peak_step) / span)
        return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(schedule: str, *, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The per-step learning-rate factor of ``schedule`` (one of :data:`SCHEDULES`), for ``LambdaLR``."""
    if schedule == "cosine":
        return WarmupCosine(warmup_steps, total_steps)
    if schedule == "one-cycle":
        return OneCycle(total_steps)
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum; weight decay only on weights of two or more dimensions (not BN, biases).

    The fused implementation is used where torch has it: one kernel over all parameters keeps the step
    over the full-size parameters cheap when a small config leaves most of their gradients zero.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    options = dict(lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)
    try:
        return torch.optim.SGD(groups, fused=True, **options)
    except (RuntimeError, TypeError):
        return torch.optim.SGD(groups, foreach=True, **options)
