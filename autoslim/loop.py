"""What the supernet trainer (:mod:`autoslim.train`) and the retraining trainer (:mod:`autoslim.retrain`) share:
the batch-size check, the optimizer and its per-step schedule, mixed precision, the run's clock, the
metrics file, the resume checks and the error raised when the loss diverges."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .io import write_text
from .sandwich import build_optimizer, lr_factor
from .settings import TrainSettings

__all__ = ["DivergedError", "TrainingLoop"]


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingLoop:
    """The state and helpers of an epoch-based training run; subclasses add the model, the data and the loop.

    Subclasses set ``out`` (the run directory), ``device`` and ``metric_columns``, call
    :meth:`_check_batch_size` before building their model and :meth:`_setup_schedule` once it is built.
    """

    out: Path
    device: torch.device
    metric_columns: tuple[str, ...]
    what = "training"  # named in the divergence error

    @staticmethod
    def _check_batch_size(batch_size: int, data: Any) -> None:
        """Raise ValueError if one batch needs more images than the training split has (before building anything)."""
        train_size = len(data.train)
        if batch_size > train_size:
            raise ValueError(f"batch size {batch_size} is larger than the training split of {data.name} "
                             f"({train_size} images after holding out {len(data.search)} for the search): "
                             f"use --batch-size {train_size} or less")

    def _setup_schedule(self, model: nn.Module, train: TrainSettings, data: Any) -> None:
        """Set amp, channels_last, the step counts, optimizer and schedule, and a fresh run's counters."""
        self.amp = train.amp == "on" or (train.amp == "auto" and self.device.type == "cuda"
                                         and torch.cuda.is_bf16_supported())
        self.channels_last = train.channels_last == "on"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = len(data.train) // train.batch_size
        self.total_steps = self.steps_per_epoch * train.epochs
        self.optimizer = build_optimizer(model, train)
        warmup = round(train.warmup_epochs * self.steps_per_epoch)
        factor = lr_factor(getattr(train, "schedule", "cosine"), warmup_steps=warmup, total_steps=self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.step = 0
        self.epoch = 0  # completed (evaluated) epochs
        self.seconds = 0.0  # training time of earlier sessions of this run
        self._session: float | None = None  # when this session's training started; None outside the loop
        self.rows: list[dict[str, Any]] = []

    def _restore_training(self, state: dict[str, Any], model: nn.Module) -> None:
        """Check the checkpoint's steps per epoch, then load the weights, optimizer, schedule and counters."""
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"{self.out / CHECKPOINT_NAME}: {state['steps_per_epoch']} steps per epoch were "
                             f"recorded, {self.steps_per_epoch} now; pass --force to start over")
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.seconds = int(state["step"]), int(state["epoch"]), float(state["seconds"])
        self.rows = [dict(row) for row in state["metrics"]]

    def _elapsed(self) -> float:
        """Seconds of training of this run, earlier sessions included."""
        return self.seconds + (time.perf_counter() - self._session if self._session is not None else 0.0)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:  # e.g. a full disk: the atomic writes kept the previous files
            raise RuntimeError(f"cannot write to {self.out}: {error.strerror or error}; the previous checkpoint is "
                               "kept, so free some space and run the same command again to resume") from error

    def _write_metrics(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.metric_columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        with self._writing():
            write_text(self.out / "metrics.csv", buffer.getvalue())

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _diverged(self, what: str) -> None:
        kept = f"the last good checkpoint (epoch {self.epoch}) is kept in {self.out / CHECKPOINT_NAME}" \
            if (self.out / CHECKPOINT_NAME).exists() else "no checkpoint was written"
        raise DivergedError(f"{self.what} diverged: {what} at step {self.step} (epoch {self.epoch + 1}); {kept}; "
                            "lower --lr and start over with --force")
