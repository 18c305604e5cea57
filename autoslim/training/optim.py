"""The optimizer and learning-rate schedules of every training run (supernet, retraining, joint retraining).

:func:`build_optimizer` is SGD with (Nesterov) momentum and no weight decay on BatchNorm and biases;
:func:`lr_factor` is the per-step factor of a schedule (:class:`WarmupCosine` or :class:`OneCycle`) for ``LambdaLR``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .settings import SCHEDULES, TrainSettings

__all__ = ["WarmupCosine", "OneCycle", "lr_factor", "build_optimizer"]


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
