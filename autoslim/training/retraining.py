"""Retraining a searched network from scratch, beside the uniform-width network of the same cost (AutoSlim section 4).

A channel config is worth what the network built from it reaches when trained on its own. :func:`retrain`
builds the static network of a config with fresh weights (:func:`autoslim.training.retrain_setup.build_network`) and
trains it with the space's full recipe (:func:`autoslim.training.retrain_setup.resolve_retrain`): the data, train/search
split and augmentation of supernet training, SGD with Nesterov momentum, linear warm-up then cosine decay
per step, label smoothing and no weight decay on BatchNorm and biases. It then tests it on the test split.

With ``init`` set (``retrain --init supernet``, :func:`autoslim.training.retrain_setup.resolve_retrain`), the
network starts instead from the trained supernet's weights at its config, BatchNorm recalibrated for it
(:func:`autoslim.training.warm_start.sliced_network`), and fine-tunes briefly: the fast alternative to a full run.
Its summary records the test accuracy of that start (``init_accuracy``); the uniform baseline is then the widest
uniform network of the supernet within the config's MACs, sliced from it too.

``baseline="uniform"`` also trains, with the same recipe and seed, the uniform-width network whose MACs
are the largest not above the config's (:func:`autoslim.training.retrain_setup.uniform_baseline`), in ``OUT/uniform``.
Several configs given together are trained as one slimmable network with switchable BatchNorm
(:class:`autoslim.training.joint.JointNetwork`): every step trains each config on the batch, and each is tested with
its own BatchNorm layers.

Every network's directory holds ``checkpoint.pt``, ``metrics.csv``, ``run.yaml`` and ``summary.json``; the
loop, the resume and the stop handling are those of :mod:`autoslim.training.trainer`, so an interrupted and resumed
retraining ends with the same weights as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..channel_config import ChannelConfig, save_config
from ..checkpoint import CHECKPOINT_NAME
from ..devices import resolve_device
from ..interrupt import StopRequest
from ..io import read_yaml, write_yaml
from ..network.supernet import Supernet
from ..seeds import derive_seed
from ..spaces import SearchSpace, space_options
from .calibrate import evaluate
from .joint import JointNetwork
from .retrain_setup import (BASELINES, FORMAT, RetrainSettings, build_network, load_configs, load_retrained,
                            read_retrained, resolve_retrain, supernet_run, uniform_baseline)
from .settings import TrainSettings
from .trainer import Report, RunKind, Trainer, open_run
from .warm_start import check_init, sliced_network, weights_sha256

__all__ = ["FORMAT", "METRIC_COLUMNS", "BASELINES", "RetrainSettings", "RetrainResult", "resolve_retrain", "retrain",
           "build_network", "load_retrained"]

METRIC_COLUMNS = ("step", "epoch", "kind", "network", "lr", "loss", "images_per_second", "test_accuracy",
                  "test_loss", "seconds")


@dataclass
class RetrainResult:
    """What :func:`retrain` returns.

    Attributes:
        out_dir: the retrain directory.
        summary: the content of its ``summary.json`` (with ``baseline`` when one was trained).
        model: the trained network (a plain module, or a :class:`~autoslim.training.joint.JointNetwork`), eval mode.
        baseline: the baseline's summary, if one was trained.
        interrupted: Ctrl-C / SIGTERM stopped it after a checkpoint was written.
        ignored: settings given for a resumed run that differ from its own, ``{key: (run's, given)}``.
    """

    out_dir: Path
    summary: dict[str, Any]
    model: nn.Module
    baseline: dict[str, Any] | None = None
    interrupted: bool = False
    ignored: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def retrain(settings: RetrainSettings, out_dir: str | os.PathLike, *, resume: bool = False, force: bool = False,
            download: bool = False, callback: Callable[[str, Report], None] | None = None) -> RetrainResult:
    """Train the network of ``settings.configs`` from scratch (and the baseline), test it, write ``out_dir``.

    Args:
        settings: see :func:`~autoslim.training.retrain_setup.resolve_retrain`.
        out_dir: the retrain directory (the baseline goes to ``out_dir/uniform``). One holding a checkpoint
            of the same channels and settings is resumed.
        resume: continue the retraining in ``out_dir`` with its own settings where ``settings`` differ.
        force: start over even if ``out_dir`` holds another retraining.
        download: let torchvision download the dataset.
        callback: called with the network's name (``searched``, ``joint`` or ``uniform``) and a
            :class:`~autoslim.training.trainer.Report` (``start``, ``step``, ``log``: ``loss``, ``lr``,
            ``images_per_second``; ``epoch``: the test accuracy of every config, by config name; ``end``).

    Raises:
        ValueError: a bad config, settings, another retraining in ``out_dir`` (without ``force``), an
            unreadable checkpoint, no uniform width within the config's MACs.
        FileNotFoundError: a config file is missing, or the dataset is not where it was looked for.
        DivergedError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    from ..data.sources import load_dataset

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("retrain runs in a single process: start it without torchrun")
    out = Path(out_dir)
    space, configs, channels = load_configs(settings.configs)
    train, state, ignored = open_run(out, settings.train, _run_kind(channels, settings.train.init), resume=resume,
                                     force=force)
    given_init, settings = settings.train.init, replace(settings, train=train)
    data = load_dataset(train.dataset, data_dir=train.data_dir, download=download, seed=train.seed,
                        search_size=train.search_size)
    Trainer.check_data(space, data, train.batch_size)
    device = resolve_device(train.device)
    names = [Path(p).stem for p in settings.configs]
    width = configs[0].source.get("uniform") if len(configs) == 1 else None  # autoslim cost --save-config's
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        width = None
    kind = "joint" if len(channels) > 1 else "searched" if width is None else "uniform"
    supernet, sha256 = None, None
    if train.init is not None:
        # a run moved with its supernet (another folder or machine) keeps its own init and reads the supernet where it
        # is now: check_state accepted the given path only as the same file, by the SHA-256 its start recorded
        moved = state is not None and given_init is not None and given_init != train.init
        where = given_init if moved else train.init
        supernet, sha256 = supernet_run(where, configs[0], settings.configs[0], device=device), weights_sha256(where)
    main = _NetworkTrainer(kind, names, space, channels, settings, data, out, device, callback, width=width,
                           supernet=supernet, supernet_sha256=sha256)
    main.begin(state, force=force)
    trainers = [main]
    if settings.baseline == "uniform":
        trainers.append(_uniform_trainer(main, configs[0], resume=resume, force=force, callback=callback))
    with StopRequest() as stop:
        interrupted = any(trainer.run(stop) for trainer in trainers)  # stops at the first interrupted one
    baseline = None
    if len(trainers) > 1 and not interrupted:
        baseline = {**trainers[1].summary(), "dir": "uniform"}
        main.extra["baseline"] = baseline
        main.write_summary()
    return RetrainResult(out, main.summary(), main.model.eval(), baseline, interrupted, ignored)


def _run_kind(channels: list[dict[str, int]], init: str | None) -> RunKind:
    def check_fresh(out: Path) -> None:
        saved = read_yaml(out / "run.yaml")
        if not isinstance(saved, dict) or saved.get("channels") != channels:
            raise ValueError(f"{out} holds another retraining (other channels); use another --out, or --force")
        _check_init(out, (saved.get("settings") or {}).get("init"), init)

    def check_state(out: Path, state: dict[str, Any], saved: TrainSettings, given: TrainSettings) -> None:
        if state["channels"] != channels:
            raise ValueError(f"{out} holds a retraining of other channels; use another --out, or --force to replace it")
        _check_init(out, saved.init, init, (state.get("init") or {}).get("init_sha256"))

    return RunKind("retraining", "a retraining", read_retrained, check_fresh, check_state)


def _check_init(out: Path, saved: str | None, given: str | None, saved_sha256: str | None = None) -> None:
    check_init(out, "retraining", saved, given, start="fine-tuned from the supernet",
               flags=("--init PATH", "--init scratch"), saved_sha256=saved_sha256)


def _uniform_trainer(main: _NetworkTrainer, config: ChannelConfig, *, resume: bool, force: bool,
                     callback: Callable[[str, Report], None] | None) -> _NetworkTrainer:
    """The trainer of the uniform network of at most the config's MACs, in ``OUT/uniform``."""
    data = main.data
    width, uniform = uniform_baseline(main.space, config, main.costs[0].macs, path=main.retraining.configs[0],
                                      num_classes=data.num_classes, input_size=data.image_size, supernet=main.supernet)
    out = main.out / "uniform"
    train, state, _ = open_run(out, main.settings, _run_kind([uniform.channels], main.settings.init),
                               resume=resume and (out / CHECKPOINT_NAME).exists(), force=force)
    path = out / "config.yaml"
    save_config(path, uniform)
    settings = RetrainSettings((str(path.resolve()),), train)
    trainer = _NetworkTrainer("uniform", [f"uniform-{width:g}x"], main.space, [uniform.channels], settings, data, out,
                              main.device, callback, width=width, supernet=main.supernet,
                              supernet_sha256=main.supernet_sha256)
    trainer.begin(state, force=force)
    return trainer


class _NetworkTrainer(Trainer):
    """One static (or joint) network's training: cross-entropy on every config, each config's test."""

    format = FORMAT
    metric_columns = METRIC_COLUMNS

    def __init__(self, name: str, members: list[str], space: SearchSpace, channels: list[dict[str, int]],
                 settings: RetrainSettings, data: Any, out: Path, device: torch.device,
                 callback: Callable[[str, Report], None] | None, *, width: float | None,
                 supernet: Supernet | None = None, supernet_sha256: str | None = None) -> None:
        report = (lambda r: callback(name, r)) if callback is not None else None
        super().__init__(settings.train, out, device, data, callback=report)
        self.name, self.members, self.space, self.channels = name, members, space, channels
        self.retraining, self.width = settings, width
        self.supernet = supernet  # the trained supernet a fresh start slices its weights from (--init supernet)
        self.supernet_sha256 = supernet_sha256  # the SHA-256 of its checkpoint: it recognises a moved supernet run
        # the sliced network's start, its test accuracy and loss: {init, init_sha256, init_accuracy, init_loss}
        self.init: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}
        self.what = f"training of the {name} network"
        self.loss_count = len(members)
        self.space_options = space_options(space, num_classes=data.num_classes, input_size=data.image_size)
        self.model, self.costs = build_network(space, channels, num_classes=data.num_classes,
                                               input_size=data.image_size, seed=settings.train.seed)
        self.network = self.model
        self.joint = self.model if isinstance(self.model, JointNetwork) else None
        self.model.to(device)
        self._setup(self.model)
        self.evaluation: list[tuple[float, float]] = []  # (accuracy, loss) per member, after the last epoch

    # -- state ---------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT_NAME
        if state["space_options"] != self.space_options:
            raise ValueError(f"{path}: the network was trained with {state['space_options']}, not "
                             f"{self.space_options}; pass --force to start over")
        if state["split"] != self.data.split_info():
            raise ValueError(f"{path}: the {self.data.name} data splits differently now than when the retraining "
                             "started; pass the same data (--data-dir) or --force to start over")
        self._restore_training(state)
        self.evaluation = [tuple(pair) for pair in state["evaluation"]]
        self.init = dict(state["init"]) if state.get("init") else None

    def begin(self, state: dict[str, Any] | None, *, force: bool) -> None:
        """As :meth:`Trainer.begin`; a fresh start with a supernet then takes its sliced weights (:meth:`_slice`)."""
        super().begin(state, force=force)
        if state is None and self.supernet is not None:
            self._slice()

    def _slice(self) -> None:
        """Start from the supernet's weights at this config, BatchNorm recalibrated for it, and test that start."""
        generator = torch.Generator().manual_seed(derive_seed("calibration", self.settings.seed))
        size = min(self.settings.eval_batch_size, len(self.data.train))
        batches = self.data.batches("train", size, shuffle=True, augment=True, generator=generator, device=self.device)
        with self._autocast():
            sliced = sliced_network(self.supernet, self.channels[0], batches, self.settings.calib_batches)
        self.network.load_state_dict(sliced.state_dict())
        accuracy, loss = self._test()[0]
        self.init = {"init": self.settings.init, "init_sha256": self.supernet_sha256,
                     "init_accuracy": round(accuracy, 6), "init_loss": round(loss, 6)}

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"network": self.name, "space_options": self.space_options, "channels": self.channels,
                "configs": list(self.retraining.configs), "split": self.data.split_info(),
                "evaluation": [list(pair) for pair in self.evaluation], "init": self.init}

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json``: the first config's test accuracy and cost, the run's facts."""
        members = []
        for i, name in enumerate(self.members):
            accuracy, loss = self.evaluation[i] if self.evaluation else (None, None)
            members.append({"network": name, "config": self.retraining.configs[i], "accuracy": accuracy, "loss": loss,
                            "macs": self.costs[i].macs, "params": self.costs[i].params, "channels": self.channels[i]})
        first = members[0]
        summary = {"network": self.name, "space": self.settings.space, "dataset": self.data.name,
                   **{key: first[key] for key in ("config", "accuracy", "loss", "macs", "params")},
                   **({"width": self.width} if self.width is not None else {}), **self._progress(),
                   "lr": self.settings.lr, "seed": self.settings.seed, "device": str(self.device),
                   "channels": first["channels"], "checkpoint": CHECKPOINT_NAME,
                   **(self.init or {"init": self.settings.init})}
        if self.joint is not None:
            summary["joint"] = members
        return {**summary, **self.extra}

    def write_run_yaml(self) -> None:
        write_yaml(self.out / "run.yaml", {**self.retraining.to_dict(), "channels": self.channels},
                   header="autoslim retrain: the configs, channels and resolved settings of this retraining")

    # -- step and evaluation -------------------------------------------------------------------

    def _select(self, index: int) -> None:
        if self.joint is not None:
            self.joint.select(index)

    def train_step(self, images: Tensor, labels: Tensor) -> Tensor:
        losses = []
        for index in range(len(self.members)):
            self._select(index)
            with self._autocast():
                loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.settings.label_smoothing)
            loss.backward()
            losses.append(loss.detach().float())
        return torch.stack(losses)

    def log_losses(self, losses: list[float]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        rows = [{"network": name, "loss": round(loss, 5)} for name, loss in zip(self.members, losses)]
        return rows, {"loss": sum(losses) / len(losses)}

    def epoch_values(self) -> dict[str, float]:
        return {name: accuracy for name, (accuracy, _) in zip(self.members, self.evaluation)}

    def finish(self) -> None:
        self._select(0)

    def _test(self) -> list[tuple[float, float]]:
        """Every config's test accuracy and loss."""
        size = min(self.settings.eval_batch_size, len(self.data.test))
        results = []
        for index in range(len(self.members)):
            self._select(index)
            with self._autocast():
                batches = self.data.batches("test", size, device=self.device)
                if self.channels_last:
                    batches = ((x.contiguous(memory_format=torch.channels_last), y) for x, y in batches)
                results.append(evaluate(self.model, batches))
        self._select(0)
        return results

    def evaluate(self) -> None:
        results = self._test()
        bad = [loss for _, loss in results if not math.isfinite(loss)]
        if bad:
            self._diverged(f"test loss {bad[0]}")
        self.evaluation = [(round(accuracy, 6), round(loss, 6)) for accuracy, loss in results]
        for name, (accuracy, loss) in zip(self.members, self.evaluation):
            self.rows.append({"step": self.step, "epoch": self.epoch + 1, "kind": "eval", "network": name,
                              "test_accuracy": accuracy, "test_loss": loss, "seconds": round(self._elapsed(), 2)})
