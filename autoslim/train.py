"""Supernet training with the sandwich rule and in-place distillation (US-Nets section 3; AutoSlim 3.2).

Every batch trains ``num_subnets`` configs of the weight-shared supernet: the largest with the hard labels
(label smoothing), the smallest and ``num_subnets - 2`` random ones (an independent uniform choice per
unit), each against the largest's detached softmax. Gradients accumulate over the subnets; one SGD step
(Nesterov, warm-up then cosine per step, no weight decay on BatchNorm and biases) follows. After each
epoch the largest and smallest configs are evaluated on the test split with recalibrated BatchNorm.

:func:`train_supernet` writes into the run directory ``checkpoint.pt`` (see :mod:`autoslim.checkpoint`;
reopen it with :func:`autoslim.checkpoint.load_run`), ``metrics.csv``, ``run.yaml`` and ``summary.json``.
A re-run into the same directory resumes. Everything random is a function of the seed and the position
in the run (data order and augmentation of the seed and epoch; subnets and torch's RNG of the seed, rank
and step), so an interrupted and resumed run ends with the same weights as an uninterrupted one on CPU.

Under ``torchrun`` the run is data-parallel (DistributedDataParallel, gloo on CPU, nccl on CUDA): the
global batch is split over the ranks, each rank samples its own subnets (seed + rank), gradients are
all-reduced once per step (``no_sync`` for the first ``num_subnets - 1`` passes) and only rank 0 writes.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from . import __version__
from .calibrate import evaluate, recalibrate
from .checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, save_checkpoint, unit_records
from .devices import ProcessGroup, keep_freed_memory, resolve_device
from .interrupt import StopRequest
from .io import write_json
from .loop import DivergedError, TrainingLoop
from .sandwich import derive_seed, sandwich_configs, sandwich_step, subnet_rng
from .settings import IDENTITY_KEYS, RUNTIME_KEYS, TrainSettings, load_settings, save_settings, settings_from_dict
from .supernet import Supernet

__all__ = ["train_supernet", "TrainResult", "Report", "DivergedError", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("step", "epoch", "kind", "lr", "loss_largest", "loss_smallest", "images_per_second",
                  "largest_accuracy", "largest_loss", "smallest_accuracy", "smallest_loss", "seconds")
_OUTPUTS = (CHECKPOINT_NAME, "metrics.csv", "run.yaml", "summary.json")


@dataclass(frozen=True)
class Report:
    """A progress report handed to the ``callback`` of :func:`train_supernet`.

    ``kind`` is ``start`` (``values``: ``start_step``, ``resumed``), ``step`` (after every optimizer step;
    no values, no host sync), ``log`` (every ``log_every`` steps: ``loss_largest``, ``loss_smallest``,
    ``lr``, ``images_per_second``), ``epoch`` (after each epoch's evaluation and checkpoint:
    ``largest_accuracy``, ``smallest_accuracy`` and their losses) or ``end``.
    """

    kind: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train_supernet` returns.

    Attributes:
        supernet: the trained supernet (BatchNorm calibrated for the largest config).
        summary: the content of ``summary.json``.
        out_dir: the run directory.
        interrupted: the run stopped early on Ctrl-C / SIGTERM after writing a checkpoint.
        ignored: settings given for a resumed run that differ from its own, ``{key: (run's, given)}``.
    """

    supernet: Supernet
    summary: dict[str, Any]
    out_dir: Path
    interrupted: bool = False
    ignored: dict[str, tuple[Any, Any]] = field(default_factory=dict)


# -- the run directory ---------------------------------------------------------------------------


def _open_run(out: Path, settings: TrainSettings, *, resume: bool, force: bool
              ) -> tuple[TrainSettings, dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """Decide between a fresh start and a resume: (settings to use, checkpoint state or None, ignored settings)."""
    checkpoint = out / CHECKPOINT_NAME
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory")
    if force:
        if resume:
            raise ValueError("--resume continues a run and --force starts it over: give one of them")
        return settings, None, {}
    if not checkpoint.exists():
        if resume:
            raise FileNotFoundError(f"--resume: {out} holds no {CHECKPOINT_NAME} to resume from")
        if (out / "run.yaml").exists():
            # a run that stopped before its first checkpoint: starting it again loses nothing, unless it was another run
            _check_same_run(out, load_settings(out / "run.yaml"), settings, resume=False)
        elif any((out / name).exists() for name in _OUTPUTS):
            raise ValueError(f"{out} holds files that are not from a train-supernet run (no run.yaml); use another "
                             "--out, or --force to overwrite them")
        return settings, None, {}
    try:
        state = load_checkpoint(checkpoint)
    except ValueError as error:
        raise ValueError(f"{error}; pass --force to start the run in {out} over") from None
    if state.get("weights_only"):
        raise ValueError(f"{checkpoint} holds the trained weights only (no optimizer state), so the run cannot be "
                         "resumed from it; search it with autoslim search, or use another --out")
    saved = settings_from_dict(state["settings"], str(checkpoint))
    ignored = _check_same_run(out, saved, settings, resume=resume)
    runtime = {key: getattr(settings, key) for key in RUNTIME_KEYS if key != "data_dir"}
    if settings.data_dir is not None:
        runtime["data_dir"] = settings.data_dir
    return replace(saved, **runtime), state, ignored


def _check_same_run(out: Path, saved: TrainSettings, given: TrainSettings, *, resume: bool) -> dict[str, tuple[Any, Any]]:
    for key in IDENTITY_KEYS:
        if getattr(saved, key) != getattr(given, key):
            raise ValueError(f"{out} holds a run of space {saved.space!r} on dataset {saved.dataset!r}, not "
                             f"{given.space!r} on {given.dataset!r}: use another --out, or --force to replace it")
    differences = saved.differences(given)
    if differences and not resume:
        shown = ", ".join(f"{k} {a!r} (given {b!r})" for k, a, b in ((k, *v) for k, v in differences.items()))
        raise ValueError(f"{out} holds a run with other settings: {shown}; pass --resume to continue it with its "
                         "own settings, or --force to start over")
    return differences


# -- training ------------------------------------------------------------------------------------


def train_supernet(settings: TrainSettings, out_dir: str | os.PathLike, *, resume: bool = False, force: bool = False,
                   download: bool = False, callback: Callable[[Report], None] | None = None) -> TrainResult:
    """Train a supernet (or resume its run) and write the run directory.

    Args:
        settings: the run's settings (see :func:`autoslim.settings.resolve_settings`).
        out_dir: the run directory. If it holds a checkpoint of the same settings the run resumes.
        resume: continue the run in ``out_dir`` with its own settings even where ``settings`` differ
            (device, amp, channels_last, log_every and data_dir are always taken from ``settings``).
        force: start over even if ``out_dir`` holds another run.
        download: let torchvision download the dataset.
        callback: receives a :class:`Report` at the start, after every step, log interval and epoch, and at
            the end (on rank 0 only).

    Returns:
        The trained supernet and the summary; ``interrupted`` when Ctrl-C / SIGTERM stopped it after a
        checkpoint was written.

    Raises:
        ValueError: bad settings, a batch larger than the data, another run in ``out_dir`` (without
            ``force``), an unreadable checkpoint.
        FileNotFoundError: the dataset is not where it was looked for.
        DivergedError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    out = Path(out_dir)
    settings, state, ignored = _open_run(out, settings, resume=resume, force=force)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(settings.device, local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    processes = ProcessGroup.start(device)
    try:
        trainer = _Trainer(settings, out, device, processes, download=download, callback=callback)
        if state is not None:
            trainer.restore(state)
        elif force and processes.main:
            for name in _OUTPUTS:
                (out / name).unlink(missing_ok=True)
        result = trainer.run()
        result.ignored = ignored
        return result
    finally:
        processes.close()


class _Trainer(TrainingLoop):
    """One training run: data, supernet, optimizer and the loop (the state of :func:`train_supernet`)."""

    metric_columns = METRIC_COLUMNS

    def __init__(self, settings: TrainSettings, out: Path, device: torch.device, processes: ProcessGroup, *,
                 download: bool, callback: Callable[[Report], None] | None) -> None:
        from .data import load_dataset
        from .spaces import build_supernet, configure_space, load_space, space_options

        self.settings, self.out, self.device, self.processes = settings, out, device, processes
        self.callback = callback if processes.main else None
        space = configure_space(load_space(settings.space), width_mult=settings.width_mult)
        self.data = load_dataset(settings.dataset, data_dir=settings.data_dir, download=download, seed=settings.seed,
                                 search_size=settings.search_size)
        if self.data.in_channels != space.in_channels:
            raise ValueError(f"space {space.name} takes {space.in_channels}-channel images but {self.data.name} has "
                             f"{self.data.in_channels}-channel ones")
        self._check_batch_size(settings.batch_size, self.data)
        if settings.batch_size % processes.world:
            raise ValueError(f"batch size {settings.batch_size} must be a multiple of the {processes.world} processes")
        self.space_options = space_options(space, num_classes=self.data.num_classes, input_size=self.data.image_size)
        torch.manual_seed(settings.seed)
        self.supernet = build_supernet(space, num_classes=self.data.num_classes, input_size=self.data.image_size)
        self.supernet.to(device)
        self._setup_schedule(self.supernet, settings, self.data)
        self.model: nn.Module = self.supernet
        if processes.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Running statistics are recalibrated before every evaluation: no buffer traffic per forward.
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                              else {"broadcast_buffers": False})
            self.model = DDP(self.supernet, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)
        self.largest, self.smallest = self.supernet.largest_config(), self.supernet.smallest_config()
        self.evaluation: dict[str, float] = {}

    # -- state ---------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT_NAME
        if state["units"] != unit_records(self.supernet) or state["space_options"] != self.space_options:
            raise ValueError(f"{path}: the supernet of space {self.settings.space!r} differs from the one the run "
                             "was trained with (was the space file changed?); pass --force to start over")
        if state["data"]["split"] != self.data.split_info():
            raise ValueError(f"{path}: the {self.data.name} data splits differently now than when the run started; "
                             "pass the same data (--data-dir) or --force to start over")
        self._restore_training(state, self.supernet)
        rng = state["rng"]
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        self.evaluation = dict(state["evaluation"])

    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "versions": {"autoslim": __version__, "torch": str(torch.__version__)},
            "space": self.settings.space,
            "space_options": self.space_options,
            "units": unit_records(self.supernet),
            "data": {"dataset": self.data.name, "data_dir": self.settings.data_dir, "seed": self.settings.seed,
                     "search_size": self.settings.search_size, "split": self.data.split_info()},
            "settings": self.settings.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "finished": self.epoch >= self.settings.epochs,
            "world_size": self.processes.world,
            "model": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # The loop reseeds from (seed, epoch / step) and needs none of these; they let the caller's RNGs continue.
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "data_generator_seed": derive_seed("data", self.settings.seed, self.step // self.steps_per_epoch)},
            "metrics": self.rows,
            "evaluation": self.evaluation,
            "seconds": self._elapsed(),
        }

    def _save(self) -> None:
        if self.processes.main:
            with self._writing():
                save_checkpoint(self.out / CHECKPOINT_NAME, self._state())
                write_json(self.out / "summary.json", self._summary())
            self._write_metrics()

    def _summary(self) -> dict[str, Any]:
        largest, smallest = self.supernet.cost(self.largest), self.supernet.cost(self.smallest)
        images, seconds = self.step * self.settings.batch_size, self._elapsed()
        return {
            "space": self.settings.space,
            "dataset": self.data.name,
            "epochs": self.epoch,
            "planned_epochs": self.settings.epochs,
            "finished": self.epoch >= self.settings.epochs,
            "steps": self.step,
            **{key: self.evaluation.get(key) for key in ("largest_accuracy", "smallest_accuracy", "largest_loss",
                                                         "smallest_loss")},
            "largest_macs": largest.macs, "largest_params": largest.params,
            "smallest_macs": smallest.macs, "smallest_params": smallest.params,
            "seconds": round(seconds, 2),
            "seconds_per_epoch": round(seconds / self.epoch, 2) if self.epoch else None,
            "images_per_second": round(images / seconds, 1),
            "batch_size": self.settings.batch_size,
            "num_subnets": self.settings.num_subnets,
            "world_size": self.processes.world,
            "device": str(self.device),
            "checkpoint": CHECKPOINT_NAME,
        }

    # -- the loop ------------------------------------------------------------------------------

    def _report(self, kind: str, **values: float) -> None:
        if self.callback is not None:
            epoch = self.epoch if kind in ("epoch", "end") else min(self.settings.epochs, self.epoch + 1)
            self.callback(Report(kind, epoch, self.settings.epochs, self.step, self.total_steps, values))

    def run(self) -> TrainResult:
        if self.processes.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_settings(self.out / "run.yaml", self.settings)
        self._session = time.perf_counter()
        self._report("start", start_step=self.step, resumed=float(self.step > 0 or self.epoch > 0))
        interrupted = False
        with StopRequest() as stop:
            while self.epoch < self.settings.epochs:
                if stop.requested and self.processes.world == 1:  # arrived during the last evaluation or save
                    interrupted = True
                    break
                completed = self._train_epoch(stop)
                if completed:
                    self._evaluate()
                    self.epoch += 1
                self._save()
                if not completed:
                    interrupted = True
                    break
                self._report("epoch", **self.evaluation)
        self.supernet.set_config(self.largest)
        self._report("end")
        return TrainResult(self.supernet, self._summary(), self.out, interrupted=interrupted)

    def _train_epoch(self, stop: StopRequest) -> bool:
        """Train the rest of the current epoch; False if a stop was requested first."""
        settings, epoch = self.settings, self.epoch
        rank, world = self.processes.rank, self.processes.world
        generator = torch.Generator().manual_seed(derive_seed("data", settings.seed, epoch))
        batches = self.data.batches("train", settings.batch_size, shuffle=True, augment=True, generator=generator,
                                    drop_last=True, device=self.device, start=self.step - epoch * self.steps_per_epoch,
                                    shard=(rank, world) if world > 1 else None)
        self.model.train()
        interval = torch.zeros(2, device=self.device)
        steps, tick = 0, time.perf_counter()
        for images, labels in batches:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            torch.manual_seed(derive_seed("torch", settings.seed, rank, self.step))  # dropout, whatever the resume point
            configs = sandwich_configs(self.supernet, settings.num_subnets, subnet_rng(settings.seed, rank, self.step))
            self.optimizer.zero_grad(set_to_none=True)
            interval += sandwich_step(self.model, self.supernet, configs, images, labels,
                                      label_smoothing=settings.label_smoothing, autocast=self._autocast)
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
        """Average the interval's losses over steps and ranks, check them, log a row; True if all ranks stop."""
        totals = self.processes.sum(torch.cat([interval, torch.tensor([float(stop)], device=self.device)]))
        loss_largest, loss_smallest, stops = (totals / torch.tensor([steps * self.processes.world] * 2 + [1.0],
                                                                    device=self.device)).tolist()
        if not (math.isfinite(loss_largest) and math.isfinite(loss_smallest)):
            self._diverged(f"loss {loss_largest if not math.isfinite(loss_largest) else loss_smallest}")
        seconds = time.perf_counter() - tick
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), "kind": "train",
               "lr": float(f"{self.scheduler.get_last_lr()[0]:.6g}"), "loss_largest": round(loss_largest, 5),
               "loss_smallest": round(loss_smallest, 5),
               "images_per_second": round(steps * self.settings.batch_size / max(seconds, 1e-9), 1),
               "seconds": round(self._elapsed(), 2)}
        self.rows.append(row)
        if self.processes.main:
            self._write_metrics()
        self._report("log", **{k: row[k] for k in ("lr", "loss_largest", "loss_smallest", "images_per_second")})
        return stops > 0

    def _calibration_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(derive_seed("calibration", self.settings.seed))
        return self.data.batches("train", batch_size, shuffle=True, generator=generator, device=self.device)

    def _evaluate(self) -> None:
        """Recalibrate BatchNorm for the smallest, then the largest config, and test both (largest last, so the
        checkpoint's statistics fit the largest)."""
        settings = self.settings
        world = self.processes.world
        calib_size = min(settings.eval_batch_size, len(self.data.train))
        test_size = max(world, min(settings.eval_batch_size, len(self.data.test)) // world * world)
        results = {}
        for name, config in (("smallest", self.smallest), ("largest", self.largest)):
            self.supernet.set_config(config)
            with self._autocast():
                recalibrate(self.supernet, self._prepare(self._calibration_batches(calib_size)), settings.calib_batches)
                shard = (self.processes.rank, world) if world > 1 else None
                test = self.data.batches("test", test_size, device=self.device, shard=shard)
                accuracy, loss = evaluate(self.supernet, self._prepare(test))
            results[name] = (accuracy, loss)
        if world > 1:  # each rank tested its shard: weight its means by its image count
            rank, n = self.processes.rank, len(self.data.test)
            count = float(((torch.arange(n) % test_size) % world == rank).sum())
            local = [value * count for pair in results.values() for value in pair] + [count]
            totals = self.processes.sum(torch.tensor(local, dtype=torch.float64, device=self.device)).tolist()
            results = {name: (totals[2 * i] / totals[-1], totals[2 * i + 1] / totals[-1])
                       for i, name in enumerate(results)}
        self.evaluation = {f"{name}_{what}": round(value, 6) for name, (accuracy, loss) in results.items()
                           for what, value in (("accuracy", accuracy), ("loss", loss))}
        if not all(math.isfinite(v) for v in self.evaluation.values()):
            self._diverged(f"test loss {self.evaluation['largest_loss']}")
        self.rows.append({"step": self.step, "epoch": self.epoch + 1, "kind": "eval",
                          **{k: self.evaluation[k] for k in ("largest_accuracy", "largest_loss", "smallest_accuracy",
                                                             "smallest_loss")},
                          "seconds": round(self._elapsed(), 2)})

    def _prepare(self, batches: Iterator[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        if not self.channels_last:
            return batches
        return ((x.contiguous(memory_format=torch.channels_last), y) for x, y in batches)
