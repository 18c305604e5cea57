"""Supernet training with the sandwich rule and in-place distillation (US-Nets section 3; AutoSlim 3.2).

Every batch trains ``num_subnets`` configs of the weight-shared supernet: the largest with the hard labels
(label smoothing), the smallest and ``num_subnets - 2`` random ones (an independent uniform choice per
unit), each against the largest's detached softmax. Gradients accumulate over the subnets; one SGD step
(Nesterov, warm-up then cosine per step, no weight decay on BatchNorm and biases) follows. After each
epoch the largest and smallest configs are evaluated on the test split with recalibrated BatchNorm.

:func:`train_supernet` writes into the run directory ``checkpoint.pt`` (see :mod:`autoslim.checkpoint`;
reopen it with :func:`autoslim.checkpoint.load_run`), ``metrics.csv``, ``run.yaml`` and ``summary.json``.
A re-run into the same directory resumes. The loop, the run directory and the stop handling are those of
:mod:`autoslim.training.trainer`; the subnets are drawn from the seed, rank and step, so an interrupted and resumed
run ends with the same weights as an uninterrupted one on CPU.

A run given ``settings.init`` starts from a trained network instead of fresh weights
(:func:`autoslim.training.warm_start.supernet_from_weights`): the supernet is built at the widths of its state dict,
so that its largest config is that network, loaded with the network's BatchNorm statistics and channel-ordered.
The largest config is then tested as loaded, without recalibration (``init_accuracy`` in ``summary.json``: the
trained network's own accuracy), and the sandwich rule fine-tunes it with the defaults of
:func:`~autoslim.training.settings.resolve_settings` for a run given ``init``. The checkpoint records the widths
(``widths``) and the start (``init``), so a resumed run, ``load_run``, the search and the export rebuild the same
supernet without the weights file.

Under ``torchrun`` the run is data-parallel (DistributedDataParallel, gloo on CPU, nccl on CUDA): the
global batch is split over the ranks, each rank samples its own subnets (seed + rank), gradients are
all-reduced once per step (``no_sync`` for the first ``num_subnets - 1`` passes) and only rank 0 writes.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, unit_records
from ..devices import ProcessGroup, resolve_device
from ..interrupt import StopRequest
from ..network.supernet import Supernet
from ..seeds import derive_seed
from .calibrate import evaluate, recalibrate
from .sandwich import sandwich_configs, sandwich_step, subnet_rng
from .settings import IDENTITY_KEYS, TrainSettings, load_settings, save_settings
from .trainer import DivergedError, Report, RunKind, Trainer, check_settings, open_run
from .warm_start import check_init, supernet_from_weights

__all__ = ["train_supernet", "TrainResult", "Report", "DivergedError", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("step", "epoch", "kind", "lr", "loss_largest", "loss_smallest", "images_per_second",
                  "largest_accuracy", "largest_loss", "smallest_accuracy", "smallest_loss", "seconds")


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


def train_supernet(settings: TrainSettings, out_dir: str | os.PathLike, *, resume: bool = False, force: bool = False,
                   download: bool = False, callback: Callable[[Report], None] | None = None) -> TrainResult:
    """Train a supernet (or resume its run) and write the run directory.

    Args:
        settings: the run's settings (see :func:`autoslim.training.settings.resolve_settings`).
        out_dir: the run directory. If it holds a checkpoint of the same settings the run resumes.
        resume: continue the run in ``out_dir`` with its own settings even where ``settings`` differ
            (device, amp, channels_last, log_every and data_dir are always taken from ``settings``).
        force: start over even if ``out_dir`` holds another run.
        download: let torchvision download the dataset.
        callback: receives a :class:`~autoslim.training.trainer.Report` at the start, after every step, log interval
            (``loss_largest``, ``loss_smallest``, ``lr``, ``images_per_second``) and epoch (``largest_accuracy``,
            ``smallest_accuracy`` and their losses), and at the end (on rank 0 only).

    A run from ``settings.init`` adds ``init``, ``init_sha256``, ``init_accuracy`` and ``init_loss`` to the summary.

    Returns:
        The trained supernet and the summary; ``interrupted`` when Ctrl-C / SIGTERM stopped it after a
        checkpoint was written.

    Raises:
        ValueError: bad settings, a batch larger than the data, another run in ``out_dir`` (without
            ``force``, or started from other weights), an unreadable checkpoint, ``init`` weights that do not fit
            the space (naming the first bad key).
        FileNotFoundError: the dataset or the ``init`` weights are not where they were looked for.
        DivergedError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    out = Path(out_dir)
    settings, state, ignored = open_run(out, settings, _run_kind(settings), resume=resume, force=force)
    device = resolve_device(settings.device, int(os.environ.get("LOCAL_RANK", "0")))
    processes = ProcessGroup.start(device)
    try:
        trainer = _SupernetTrainer(settings, out, device, processes, download=download, callback=callback,
                                   resuming=state)
        trainer.begin(state, force=force)
        with StopRequest() as stop:
            interrupted = trainer.run(stop)
        return TrainResult(trainer.supernet, trainer.summary(), out, interrupted, ignored)
    finally:
        processes.close()


def _run_kind(given: TrainSettings) -> RunKind:
    def check_fresh(out: Path) -> None:
        saved = load_settings(out / "run.yaml")
        _check_identity(out, saved, given)
        check_settings(out, "run", saved, given, resume=False)

    def check_state(out: Path, state: dict[str, Any], saved: TrainSettings, given: TrainSettings) -> None:
        if state.get("weights_only"):
            raise ValueError(f"{out / CHECKPOINT_NAME} holds the trained weights only (no optimizer state), so the "
                             "run cannot be resumed from it; search it with autoslim search, or use another --out")
        _check_identity(out, saved, given)

    return RunKind("run", "a train-supernet run", load_checkpoint, check_fresh, check_state)


def _check_identity(out: Path, saved: TrainSettings, given: TrainSettings) -> None:
    if any(getattr(saved, key) != getattr(given, key) for key in IDENTITY_KEYS):
        raise ValueError(f"{out} holds a run of space {saved.space!r} on dataset {saved.dataset!r}, not "
                         f"{given.space!r} on {given.dataset!r}: use another --out, or --force to replace it")
    check_init(out, "run", saved.init, given.init, start="started from the trained network",
               flags=("--init PATH", "no --init"), saved_sha256=_recorded_sha256(out))


def _recorded_sha256(out: Path) -> str | None:
    """The SHA-256 of the weights a run in ``out`` started from, as its summary.json records it (None if none)."""
    try:
        return json.loads((out / "summary.json").read_text()).get("init_sha256")
    except (OSError, ValueError, AttributeError):
        return None


class _SupernetTrainer(Trainer):
    """The sandwich-rule step, the largest and smallest configs' evaluation and the supernet's checkpoint."""

    format = FORMAT
    metric_columns = METRIC_COLUMNS
    loss_count = 2  # the largest and the smallest config

    def __init__(self, settings: TrainSettings, out: Path, device: torch.device, processes: ProcessGroup, *,
                 download: bool, callback: Callable[[Report], None] | None, resuming: dict[str, Any] | None) -> None:
        from ..data.sources import load_dataset
        from ..spaces import build_supernet, configure_space, load_space, space_options

        space = configure_space(load_space(settings.space), width_mult=settings.width_mult)
        data = load_dataset(settings.dataset, data_dir=settings.data_dir, download=download, seed=settings.seed,
                            search_size=settings.search_size)
        super().__init__(settings, out, device, data, processes=processes, callback=callback)
        self.check_data(space, data, settings.batch_size, processes.world)
        self.space_options = space_options(space, num_classes=data.num_classes, input_size=data.image_size)
        torch.manual_seed(settings.seed)
        # where the weights started: {init, init_sha256, init_accuracy, init_loss} for a run given --init
        self.init: dict[str, Any] | None = None
        self.widths: dict[str, int] | None = None  # per-unit maxima of a supernet narrower than the space's
        if settings.init is not None and resuming is None:
            self.supernet, self.widths, sha256 = supernet_from_weights(
                space, settings.init, num_classes=data.num_classes, input_size=data.image_size)
            self.init = {"init": settings.init, "init_sha256": sha256}
        else:
            self.widths = resuming.get("widths") if resuming is not None else None
            self.supernet = build_supernet(space, num_classes=data.num_classes, input_size=data.image_size,
                                           widths=self.widths)
        self.supernet.to(device)
        self.network: nn.Module = self.supernet
        self._setup(self.supernet)
        self.model: nn.Module = self.supernet
        if processes.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Running statistics are recalibrated before every evaluation: no buffer traffic per forward.
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                              else {"broadcast_buffers": False})
            self.model = DDP(self.supernet, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)
        self.largest, self.smallest = self.supernet.largest_config(), self.supernet.smallest_config()
        self.evaluation: dict[str, float] = {}
        if self.init is not None:
            self.init.update(self._test_as_loaded())

    # -- state ---------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT_NAME
        if state["units"] != unit_records(self.supernet) or state["space_options"] != self.space_options:
            raise ValueError(f"{path}: the supernet of space {self.settings.space!r} differs from the one the run "
                             "was trained with (was the space file changed?); pass --force to start over")
        if state["data"]["split"] != self.data.split_info():
            raise ValueError(f"{path}: the {self.data.name} data splits differently now than when the run started; "
                             "pass the same data (--data-dir) or --force to start over")
        self._restore_training(state)
        rng = state["rng"]
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        self.evaluation = dict(state["evaluation"])
        self.init = dict(state["init"]) if state.get("init") else None

    def checkpoint_fields(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "space": settings.space,
            "space_options": self.space_options,
            "units": unit_records(self.supernet),
            "data": {"dataset": self.data.name, "data_dir": settings.data_dir, "seed": settings.seed,
                     "search_size": settings.search_size, "split": self.data.split_info()},
            "world_size": self.processes.world,
            # The loop reseeds from (seed, epoch / step) and needs none of these; they let the caller's RNGs continue.
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "data_generator_seed": derive_seed("data", settings.seed, self.step // self.steps_per_epoch)},
            "evaluation": self.evaluation,
            "widths": self.widths,
            "init": self.init,
        }

    def summary(self) -> dict[str, Any]:
        largest, smallest = self.supernet.cost(self.largest), self.supernet.cost(self.smallest)
        return {
            "space": self.settings.space,
            "dataset": self.data.name,
            **self._progress(),
            **{key: self.evaluation.get(key) for key in ("largest_accuracy", "smallest_accuracy", "largest_loss",
                                                         "smallest_loss")},
            "largest_macs": largest.macs, "largest_params": largest.params,
            "smallest_macs": smallest.macs, "smallest_params": smallest.params,
            **(self.init or {}),
            "num_subnets": self.settings.num_subnets,
            "world_size": self.processes.world,
            "device": str(self.device),
            "checkpoint": CHECKPOINT_NAME,
        }

    def write_run_yaml(self) -> None:
        save_settings(self.out / "run.yaml", self.settings)

    # -- step and evaluation -------------------------------------------------------------------

    def train_step(self, images: Tensor, labels: Tensor) -> Tensor:
        settings, rank = self.settings, self.processes.rank
        configs = sandwich_configs(self.supernet, settings.num_subnets, subnet_rng(settings.seed, rank, self.step))
        return sandwich_step(self.model, self.supernet, configs, images, labels,
                             label_smoothing=settings.label_smoothing, autocast=self._autocast)

    def log_losses(self, losses: list[float]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        values = {"loss_largest": round(losses[0], 5), "loss_smallest": round(losses[1], 5)}
        return [values], values

    def epoch_values(self) -> dict[str, float]:
        return dict(self.evaluation)

    def finish(self) -> None:
        self.supernet.set_config(self.largest)

    def _calibration_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(derive_seed("calibration", self.settings.seed))
        # augmented as in training: statistics of clean images do not fit weights trained on augmented batches
        # (2 points of test accuracy lost on CIFAR-10, results/cifar10_resnet20_finetune/README.md)
        return self.data.batches("train", batch_size, shuffle=True, augment=True, generator=generator,
                                 device=self.device)

    def evaluate(self) -> None:
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

    def _test_as_loaded(self) -> dict[str, float]:
        """The largest config's test accuracy and loss with the trained network's own BatchNorm statistics.

        Nothing is recalibrated: at its largest config the supernet is the trained network (channels reordered), so
        its accuracy equals the trained network's evaluated the same way. Every rank tests all the images.
        """
        self.supernet.set_config(self.largest)
        size = min(self.settings.eval_batch_size, len(self.data.test))
        with self._autocast():
            accuracy, loss = evaluate(self.supernet, self._prepare(self.data.batches("test", size, device=self.device)))
        if not math.isfinite(loss):
            raise ValueError(f"{self.settings.init}: the trained network's test loss is {loss}: "
                             "are the weights broken?")
        return {"init_accuracy": round(accuracy, 6), "init_loss": round(loss, 6)}

    def _prepare(self, batches: Iterator[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        if not self.channels_last:
            return batches
        return ((x.contiguous(memory_format=torch.channels_last), y) for x, y in batches)
