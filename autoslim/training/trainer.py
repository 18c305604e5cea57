"""The one training loop of autoslim: supernet training, retraining and joint retraining differ only in their step.

A run directory holds ``checkpoint.pt``, ``metrics.csv``, ``run.yaml`` and ``summary.json``. :func:`open_run`
decides between a fresh start and a resume: it refuses another run's directory without ``force`` and gives a
resumed run its own settings with the runtime ones (:data:`~autoslim.training.settings.RUNTIME_KEYS`) taken from the
caller. :class:`Trainer` runs the epochs. Per step it seeds torch from the seed, rank and step, runs the kind's
:meth:`Trainer.train_step` and steps the SGD optimizer and its per-step schedule; every ``log_every`` steps it
averages the losses (over the ranks too), stops on a NaN (:class:`DivergedError`) and writes a row of
``metrics.csv``; after each epoch it evaluates, then writes the checkpoint atomically
(:func:`autoslim.checkpoint.save_checkpoint`), the summary and the metrics. The first Ctrl-C / SIGTERM (a
:class:`~autoslim.interrupt.StopRequest`) ends the step, writes the checkpoint and stops.

The data order and augmentation follow the seed and epoch, and torch's RNG the seed, rank and step, so an
interrupted and resumed run ends with the same weights as an uninterrupted one on CPU. A kind of training
(:mod:`autoslim.training.supernet_training`, :mod:`autoslim.training.retraining`) supplies its model, step, evaluation and summary.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from .. import __version__
from ..checkpoint import CHECKPOINT_NAME, save_checkpoint
from ..devices import ProcessGroup
from ..interrupt import StopRequest
from ..io import write_json, write_text
from ..seeds import derive_seed
from .optim import build_optimizer, lr_factor
from .settings import RUNTIME_KEYS, TrainSettings, settings_from_dict

__all__ = ["DivergedError", "Report", "RunKind", "open_run", "check_settings", "Trainer", "OUTPUTS"]

OUTPUTS = (CHECKPOINT_NAME, "metrics.csv", "run.yaml", "summary.json")  # what --force removes


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Report:
    """A progress report handed to the ``callback`` of a training run.

    ``kind`` is ``start`` (``values``: ``start_step``, ``resumed``), ``step`` (after every optimizer step;
    no values, no host sync), ``log`` (every ``log_every`` steps: the losses, ``lr`` and
    ``images_per_second``), ``epoch`` (after each epoch's evaluation and checkpoint: the test accuracies) or
    ``end``.
    """

    kind: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    values: Mapping[str, float] = field(default_factory=dict)


# -- the run directory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunKind:
    """How a kind of run reads its checkpoint and recognises its own directory.

    Attributes:
        noun: what the run is called in errors (``run``, ``retraining``).
        maker: what made the files of such a run (``a train-supernet run``).
        read: reads a checkpoint file (ValueError when it is unreadable or of another format).
        check_fresh: given a directory with a ``run.yaml`` but no checkpoint, raises ValueError if it is another run.
        check_state: given the directory, the checkpoint's state, its settings and the given ones, raises
            ValueError if the checkpoint is another run or cannot be resumed.
    """

    noun: str
    maker: str
    read: Callable[[Path], dict[str, Any]]
    check_fresh: Callable[[Path], None]
    check_state: Callable[[Path, dict[str, Any], TrainSettings, TrainSettings], None]


def open_run(out: Path, settings: TrainSettings, kind: RunKind, *, resume: bool, force: bool
             ) -> tuple[TrainSettings, dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """Decide between a fresh start and a resume of the run in ``out``.

    Returns:
        The settings to train with, the checkpoint's state (None for a fresh start) and the given settings
        the resumed run keeps its own of, ``{key: (run's, given)}``.

    Raises:
        ValueError: ``out`` is a file or holds another run (without ``force``), ``resume`` with ``force``, an
            unreadable checkpoint.
        FileNotFoundError: ``resume`` where there is no checkpoint.
    """
    checkpoint = out / CHECKPOINT_NAME
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a {kind.noun} directory")
    if force:
        if resume:
            raise ValueError(f"--resume continues a {kind.noun} and --force starts it over: give one of them")
        return settings, None, {}
    if not checkpoint.exists():
        if resume:
            raise FileNotFoundError(f"--resume: {out} holds no {CHECKPOINT_NAME} to resume from")
        if (out / "run.yaml").exists():  # stopped before its first checkpoint: a restart loses nothing
            kind.check_fresh(out)
        elif any((out / name).exists() for name in OUTPUTS):
            raise ValueError(f"{out} holds files that are not from {kind.maker} (no run.yaml); use another --out, "
                             "or --force to overwrite them")
        return settings, None, {}
    try:
        state = kind.read(checkpoint)
    except ValueError as error:
        raise ValueError(f"{error}; pass --force to start the {kind.noun} in {out} over") from None
    saved = settings_from_dict(state["settings"], str(checkpoint))
    kind.check_state(out, state, saved, settings)
    ignored = check_settings(out, kind.noun, saved, settings, resume=resume)
    runtime = {key: getattr(settings, key) for key in RUNTIME_KEYS if key != "data_dir" or settings.data_dir is not None}
    return replace(saved, **runtime), state, ignored


def check_settings(out: Path, noun: str, saved: TrainSettings, given: TrainSettings, *, resume: bool
                   ) -> dict[str, tuple[Any, Any]]:
    """The settings in which ``given`` differs from the run's own; ValueError if there are any and not ``resume``."""
    differences = saved.differences(given)
    if differences and not resume:
        shown = ", ".join(f"{k} {a!r} (given {b!r})" for k, (a, b) in differences.items())
        raise ValueError(f"{out} holds a {noun} with other settings: {shown}; pass --resume to continue it with its "
                         "own settings, or --force to start over")
    return differences


# -- the loop ------------------------------------------------------------------------------------


class Trainer:
    """One epoch-based training run: optimizer, schedule, the loop, its directory.

    A kind sets ``model`` (what the step runs; a DDP wrapper under ``torchrun``) and ``network`` (what the
    checkpoint saves), calls :meth:`_setup` once they are built, and implements :meth:`train_step`,
    :meth:`evaluate`, :meth:`epoch_values`, :meth:`log_losses`, :meth:`checkpoint_fields`, :meth:`summary`,
    :meth:`write_run_yaml` and :meth:`restore`. ``loss_count`` is the length of what :meth:`train_step` returns.
    """

    format: str
    metric_columns: tuple[str, ...]
    loss_count: int
    what = "training"  # named in the divergence error
    model: nn.Module
    network: nn.Module

    def __init__(self, settings: TrainSettings, out: Path, device: torch.device, data: Any, *,
                 processes: ProcessGroup | None = None, callback: Callable[[Report], None] | None = None) -> None:
        self.settings, self.out, self.device, self.data = settings, out, device, data
        self.processes = processes or ProcessGroup()
        self.callback = callback if self.processes.main else None

    @staticmethod
    def check_data(space: Any, data: Any, batch_size: int, world: int = 1) -> None:
        """Raise ValueError if the images do not fit the space or a batch needs more images than there are."""
        if data.in_channels != space.in_channels:
            raise ValueError(f"space {space.name} takes {space.in_channels}-channel images but {data.name} has "
                             f"{data.in_channels}-channel ones")
        train_size = len(data.train)
        if batch_size > train_size:
            raise ValueError(f"batch size {batch_size} is larger than the training split of {data.name} "
                             f"({train_size} images after holding out {len(data.search)} for the search): "
                             f"use --batch-size {train_size} or less")
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must be a multiple of the {world} processes")

    def _setup(self, model: nn.Module) -> None:
        """Set amp, channels_last, the step counts, optimizer and schedule, and a fresh run's counters."""
        train, device = self.settings, self.device
        self.amp = train.amp == "on" or (train.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.channels_last = train.channels_last == "on"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = len(self.data.train) // train.batch_size
        self.total_steps = self.steps_per_epoch * train.epochs
        self.optimizer = build_optimizer(model, train)
        warmup = round(train.warmup_epochs * self.steps_per_epoch)
        factor = lr_factor(train.schedule, warmup_steps=warmup, total_steps=self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.step, self.epoch = 0, 0  # optimizer steps, completed (evaluated) epochs
        self.seconds = 0.0  # training time of earlier sessions of this run
        self._session: float | None = None  # when this session's training started; None outside the loop
        self.rows: list[dict[str, Any]] = []

    # -- what a kind supplies ------------------------------------------------------------------

    def train_step(self, images: Tensor, labels: Tensor) -> Tensor:
        """Forward and backward one batch (gradients accumulate); the detached losses, ``loss_count`` of them."""
        raise NotImplementedError

    def evaluate(self) -> None:
        """Test the network after an epoch, append the ``eval`` rows and call :meth:`_diverged` on a NaN."""
        raise NotImplementedError

    def epoch_values(self) -> dict[str, float]:
        """The values of the ``epoch`` report."""
        raise NotImplementedError

    def log_losses(self, losses: list[float]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The loss fields of this interval's metrics rows (one row each), and the loss values of the ``log`` report."""
        raise NotImplementedError

    def checkpoint_fields(self) -> dict[str, Any]:
        """What the checkpoint holds besides the training state: what rebuilds the network and its data."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        raise NotImplementedError

    def write_run_yaml(self) -> None:
        """Write the run's resolved settings, ``run.yaml``."""
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        """Check that the checkpoint's state is this run's, then load it (:meth:`_restore_training`)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Leave the network ready for use after the loop."""

    # -- state ---------------------------------------------------------------------------------

    def begin(self, state: dict[str, Any] | None, *, force: bool) -> None:
        """Resume from ``state``, or start over, removing the directory's old outputs when ``force``."""
        if state is not None:
            self.restore(state)
        elif force and self.processes.main:
            for name in OUTPUTS:
                (self.out / name).unlink(missing_ok=True)

    def _restore_training(self, state: dict[str, Any]) -> None:
        """Check the checkpoint's steps per epoch, then load the weights, optimizer, schedule and counters."""
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"{self.out / CHECKPOINT_NAME}: {state['steps_per_epoch']} steps per epoch were "
                             f"recorded, {self.steps_per_epoch} now; pass --force to start over")
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.seconds = int(state["step"]), int(state["epoch"]), float(state["seconds"])
        self.rows = [dict(row) for row in state["metrics"]]

    def _state(self) -> dict[str, Any]:
        return {"format": self.format, "versions": {"autoslim": __version__, "torch": str(torch.__version__)},
                **self.checkpoint_fields(), "settings": self.settings.to_dict(), "epoch": self.epoch,
                "step": self.step, "steps_per_epoch": self.steps_per_epoch, "finished": self.finished,
                "model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "metrics": self.rows, "seconds": self._elapsed()}

    @property
    def finished(self) -> bool:
        return self.epoch >= self.settings.epochs

    def _progress(self) -> dict[str, Any]:
        """The summary's facts about the run's progress and speed."""
        seconds = self._elapsed()
        return {"epochs": self.epoch, "planned_epochs": self.settings.epochs, "finished": self.finished,
                "steps": self.step, "seconds": round(seconds, 2),
                "seconds_per_epoch": round(seconds / self.epoch, 2) if self.epoch else None,
                "images_per_second": round(self.step * self.settings.batch_size / max(seconds, 1e-9), 1),
                "batch_size": self.settings.batch_size}

    def _save(self) -> None:
        if self.processes.main:
            with self._writing():
                save_checkpoint(self.out / CHECKPOINT_NAME, self._state())
            self.write_summary()
            self._write_metrics()

    def write_summary(self) -> None:
        with self._writing():
            write_json(self.out / "summary.json", self.summary())

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

    def _report(self, kind: str, **values: float) -> None:
        if self.callback is not None:
            epoch = self.epoch if kind in ("epoch", "end") else min(self.settings.epochs, self.epoch + 1)
            self.callback(Report(kind, epoch, self.settings.epochs, self.step, self.total_steps, values))

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: StopRequest) -> bool:
        """Train the remaining epochs, evaluating and saving after each; True if ``stop`` interrupted it."""
        if self.processes.main:
            with self._writing():
                self.out.mkdir(parents=True, exist_ok=True)
                self.write_run_yaml()
        self._session = time.perf_counter()
        self._report("start", start_step=self.step, resumed=float(self.step > 0 or self.epoch > 0))
        interrupted = False
        while self.epoch < self.settings.epochs:
            if stop.requested and self.processes.world == 1:  # arrived during the last evaluation or save
                interrupted = True
                break
            completed = self._train_epoch(stop)
            if completed:
                self.evaluate()
                self.epoch += 1
            self._save()
            if not completed:
                interrupted = True
                break
            self._report("epoch", **self.epoch_values())
        self.seconds, self._session = self._elapsed(), None  # a next network's time is not this one's
        self.finish()
        self._report("end")
        return interrupted

    def _train_epoch(self, stop: StopRequest) -> bool:
        """Train the rest of the current epoch; False if a stop was requested first."""
        settings, epoch = self.settings, self.epoch
        rank, world = self.processes.rank, self.processes.world
        generator = torch.Generator().manual_seed(derive_seed("data", settings.seed, epoch))
        batches = self.data.batches("train", settings.batch_size, shuffle=True, augment=True, generator=generator,
                                    drop_last=True, device=self.device, start=self.step - epoch * self.steps_per_epoch,
                                    shard=(rank, world) if world > 1 else None)
        self.model.train()
        interval, steps, tick = torch.zeros(self.loss_count, device=self.device), 0, time.perf_counter()
        for images, labels in batches:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            torch.manual_seed(derive_seed("torch", settings.seed, rank, self.step))  # dropout, whatever the resume point
            self.optimizer.zero_grad(set_to_none=True)
            interval += self.train_step(images, labels)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            steps += 1
            self._report("step")
            end_of_epoch = self.step % self.steps_per_epoch == 0
            # ranks must log at the same steps (the log is a collective), so only a single process stops at once
            if self.step % settings.log_every == 0 or end_of_epoch or (stop.requested and world == 1):
                stopping = self._log(interval, steps, tick, stop.requested)
                interval.zero_()
                steps, tick = 0, time.perf_counter()
                if stopping:
                    return False
        return True

    def _log(self, interval: Tensor, steps: int, tick: float, stop: bool) -> bool:
        """Average the interval's losses over steps and ranks, check them, log rows; True if all ranks stop."""
        totals = self.processes.sum(torch.cat([interval, torch.tensor([float(stop)], device=self.device)]))
        divisors = torch.tensor([steps * self.processes.world] * self.loss_count + [1.0], device=self.device)
        *losses, stops = (totals / divisors).tolist()
        bad = [loss for loss in losses if not math.isfinite(loss)]
        if bad:
            self._diverged(f"loss {bad[0]}")
        seconds = time.perf_counter() - tick
        common = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), "kind": "train",
                  "lr": float(f"{self.scheduler.get_last_lr()[0]:.6g}"),
                  "images_per_second": round(steps * self.settings.batch_size / max(seconds, 1e-9), 1),
                  "seconds": round(self._elapsed(), 2)}
        rows, values = self.log_losses(losses)
        self.rows.extend({**common, **row} for row in rows)
        if self.processes.main:
            self._write_metrics()
        self._report("log", lr=common["lr"], images_per_second=common["images_per_second"], **values)
        return stops > 0
