"""Retraining a searched network from scratch, beside the uniform-width network of the same cost (AutoSlim section 4).

A channel config is worth what the network built from it reaches when trained on its own. :func:`retrain`
builds the static network of a config with fresh weights (the space's network initialised with the seed,
then sliced to the config: :func:`build_network`) and trains it with the space's full recipe: the data,
train/search split and augmentation of supernet training, SGD with Nesterov momentum, linear warm-up then
cosine decay per step, label smoothing and no weight decay on BatchNorm and biases. It then tests it on
the test split.

``baseline="uniform"`` also trains, with the same recipe and seed, the uniform-width network whose MACs
are the largest not above the config's (:func:`autoslim.slimming.uniform_within`), in ``OUT/uniform``.
Several configs given together are trained as one slimmable network with switchable BatchNorm
(:class:`autoslim.joint.JointNetwork`) and each is tested with its own BatchNorm layers.

Every network's directory holds ``checkpoint.pt``, ``metrics.csv``, ``run.yaml`` and ``summary.json``. A
re-run into it resumes; the data order, augmentation and dropout are functions of the seed and the step,
so an interrupted and resumed run ends with the same weights as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import __version__
from .calibrate import evaluate
from .checkpoint import CHECKPOINT_NAME, read_state
from .config import ChannelConfig, load_config, save_config
from .devices import keep_freed_memory, resolve_device
from .export import materialize
from .interrupt import StopRequest
from .io import atomic_write, read_yaml, write_json, write_yaml
from .joint import JointNetwork
from .loop import TrainingLoop
from .sandwich import derive_seed
from .settings import RUNTIME_KEYS, TrainSettings, load_settings, resolve_settings, settings_from_dict
from .slimming import uniform_within
from .spaces import SearchSpace, build_supernet, configure_space, load_space, space_options
from .train import Report

__all__ = ["FORMAT", "METRIC_COLUMNS", "BASELINES", "RetrainSettings", "RetrainResult", "resolve_retrain", "retrain",
           "build_network", "load_retrained"]

FORMAT = "autoslim-retrain/1"
METRIC_COLUMNS = ("step", "epoch", "kind", "network", "lr", "loss", "images_per_second", "test_accuracy",
                  "test_loss", "seconds")
BASELINES = ("uniform",)
_OUTPUTS = (CHECKPOINT_NAME, "metrics.csv", "run.yaml", "summary.json")


@dataclass(frozen=True)
class RetrainSettings:
    """What a retraining is run with (saved in ``run.yaml`` with the channels).

    Attributes:
        configs: absolute paths of the config files: one, or several trained jointly.
        train: the recipe (``num_subnets`` and ``calib_batches`` are not used).
        baseline: ``uniform`` to train the uniform-width network of at most the config's MACs beside it.
    """

    configs: tuple[str, ...]
    train: TrainSettings
    baseline: str | None = None

    def __post_init__(self) -> None:
        if not self.configs:
            raise ValueError("give a config file to retrain")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        if self.baseline is not None and len(self.configs) > 1:
            raise ValueError("--baseline compares one config with the uniform network; it does not combine with --joint")

    def to_dict(self) -> dict[str, Any]:
        return {"configs": list(self.configs), "baseline": self.baseline, "settings": self.train.to_dict()}


@dataclass
class RetrainResult:
    """What :func:`retrain` returns.

    Attributes:
        out_dir: the retrain directory.
        summary: the content of its ``summary.json`` (with ``baseline`` when one was trained).
        model: the trained network (a plain module, or a :class:`~autoslim.joint.JointNetwork`), eval mode.
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


# -- settings and configs -------------------------------------------------------------------------


def resolve_retrain(config: str | os.PathLike, *, joint: Sequence[str | os.PathLike] = (), baseline: str | None = None,
                    **overrides: Any) -> RetrainSettings:
    """Settings of a retraining: the config's space's full recipe, overridden by ``overrides``.

    Without ``epochs`` the network trains for the recipe's epochs (a full run, not the supernet's fraction).
    The dataset, data directory, seed and search split default to those of the supernet run the config
    was searched from (its ``source.run``), so the network trains on the same images; else to the space's.

    Args:
        config: the config file.
        joint: more config files to train with it as one network (switchable BatchNorm).
        baseline: ``uniform`` to train the uniform-width network beside it.
        overrides: :class:`~autoslim.settings.TrainSettings` fields (None values are ignored).

    Raises:
        FileNotFoundError: a config file is missing.
        ValueError: a malformed config, an unknown space, a bad setting.
    """
    paths = tuple(str(Path(p).resolve()) for p in (config, *joint))
    main = load_config(paths[0])
    space = _space_of(main, paths[0])
    source = _source_settings(main)
    if source is not None:
        for key in ("dataset", "data_dir", "seed", "search_size"):
            if overrides.get(key) is None:
                overrides[key] = getattr(source, key)
    fraction = None if overrides.get("epochs") is not None else 1.0
    return RetrainSettings(paths, resolve_settings(space, fraction=fraction, **overrides), baseline)


def _space_of(config: ChannelConfig, path: str) -> SearchSpace:
    """The config's space, checked against the options the config was made with."""
    try:
        space = load_space(config.space)
        if space.width_arg:  # a supernet of a width-multiplier builder may have been trained at another width
            space = configure_space(space, width_mult=config.space_options.get("width_mult"))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    for key in ("width_mult", "in_channels"):
        if key in config.space_options and config.space_options[key] != getattr(space, key):
            raise ValueError(f"{path}: space_options.{key} is {config.space_options[key]!r} but space {space.name} "
                             f"has {getattr(space, key)!r}: the config was made for another version of the space")
    return space


def _source_settings(config: ChannelConfig) -> TrainSettings | None:
    """The settings of the supernet run a config was searched from, when that run is still there."""
    run = config.source.get("run") if isinstance(config.source, dict) else None
    path = Path(str(run)) / "run.yaml" if run else None
    if path is None or not path.is_file():
        return None
    try:
        return load_settings(path)
    except (ValueError, FileNotFoundError):
        return None


def _load_configs(paths: Sequence[str]) -> tuple[SearchSpace, list[ChannelConfig], list[dict[str, int]]]:
    """Load and check the config files: one space, valid channels. Errors name the file."""
    configs = [load_config(path) for path in paths]
    space = _space_of(configs[0], paths[0])
    for path, config in zip(paths[1:], configs[1:]):
        if config.space != configs[0].space or config.space_options != configs[0].space_options:
            raise ValueError(f"{path}: space {config.space!r} {config.space_options} does not match space "
                             f"{configs[0].space!r} {configs[0].space_options} of {paths[0]}: configs trained "
                             "jointly must come from one space")
    options = configs[0].space_options
    probe = build_supernet(space, num_classes=options.get("num_classes"), input_size=options.get("input_size"))
    channels = []
    for path, config in zip(paths, configs):
        try:
            channels.append(probe.validate_config(config.channels))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return space, configs, channels


def build_network(space: SearchSpace, channels: Sequence[Mapping[str, int]], *, num_classes: int, input_size: int,
                  seed: int) -> tuple[nn.Module, list[Any]]:
    """A freshly initialised network of ``channels``, and the cost of each config.

    The space's network is built at its supernet width with torch seeded by ``seed``, then sliced to the
    config (:func:`autoslim.export.materialize`): a plain module for one config, a
    :class:`~autoslim.joint.JointNetwork` for several. The same seed gives every config the same initial
    weights where they overlap, so a searched and a uniform network start alike.
    """
    torch.manual_seed(seed)
    supernet = build_supernet(space, num_classes=num_classes, input_size=input_size)
    channels = [supernet.validate_config(c) for c in channels]
    costs = [supernet.cost(c) for c in channels]
    network = materialize(supernet, channels[0]) if len(channels) == 1 else JointNetwork(supernet, channels)
    return network, costs


# -- checkpoints ----------------------------------------------------------------------------------


def _load_state(path: Path) -> dict[str, Any]:
    return read_state(path, FORMAT, "retrain")


def load_retrained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a retrain directory (or its ``checkpoint.pt``), in eval mode.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: an unreadable checkpoint, or one whose space no longer builds the same network.
    """
    path = Path(path)
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint there (autoslim retrain CONFIG --out DIR writes one)")
    state = _load_state(checkpoint)
    settings = settings_from_dict(state["settings"], str(checkpoint))
    options = state["space_options"]
    with torch.random.fork_rng(devices=[]):  # building seeds torch; leave the caller's generator alone
        space = load_space(settings.space)
        if space.width_arg:
            space = configure_space(space, width_mult=options.get("width_mult"))
        network, _ = build_network(space, state["channels"], num_classes=options["num_classes"],
                                   input_size=options["input_size"], seed=settings.seed)
    network.load_state_dict(state["model"])
    return network.to(device).eval()


# -- the run directory ---------------------------------------------------------------------------


def _open(out: Path, train: TrainSettings, channels: list[dict[str, int]], *, resume: bool, force: bool
          ) -> tuple[TrainSettings, dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """Fresh start or resume: (settings to use, checkpoint state or None, given settings the run keeps its own of)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    checkpoint = out / CHECKPOINT_NAME
    if force:
        if resume:
            raise ValueError("--resume continues a retraining and --force starts it over: give one of them")
        return train, None, {}
    if not checkpoint.exists():
        if resume:
            raise FileNotFoundError(f"--resume: {out} holds no {CHECKPOINT_NAME} to resume from")
        if (out / "run.yaml").exists():
            saved = read_yaml(out / "run.yaml")
            if not isinstance(saved, dict) or saved.get("channels") != channels:
                raise ValueError(f"{out} holds another retraining (other channels); use another --out, or --force")
        elif any((out / name).exists() for name in _OUTPUTS):
            raise ValueError(f"{out} holds files that are not from a retraining (no run.yaml); use another --out, "
                             "or --force to overwrite them")
        return train, None, {}
    try:
        state = _load_state(checkpoint)
    except ValueError as error:
        raise ValueError(f"{error}; pass --force to start over in {out}") from None
    if state["channels"] != channels:
        raise ValueError(f"{out} holds a retraining of other channels; use another --out, or --force to replace it")
    saved = settings_from_dict(state["settings"], str(checkpoint))
    differences = saved.differences(train)
    if differences and not resume:
        shown = ", ".join(f"{k} {a!r} (given {b!r})" for k, (a, b) in differences.items())
        raise ValueError(f"{out} holds a retraining with other settings: {shown}; pass --resume to continue it with "
                         "its own settings, or --force to start over")
    runtime = {key: getattr(train, key) for key in RUNTIME_KEYS if key != "data_dir"}
    if train.data_dir is not None:
        runtime["data_dir"] = train.data_dir
    return replace(saved, **runtime), state, differences


# -- training -------------------------------------------------------------------------------------


def retrain(settings: RetrainSettings, out_dir: str | os.PathLike, *, resume: bool = False, force: bool = False,
            download: bool = False, callback: Callable[[str, Report], None] | None = None) -> RetrainResult:
    """Train the network of ``settings.configs`` from scratch (and the baseline), test it, write ``out_dir``.

    Args:
        settings: see :func:`resolve_retrain`.
        out_dir: the retrain directory (the baseline goes to ``out_dir/uniform``). One holding a checkpoint
            of the same channels and settings is resumed.
        resume: continue the retraining in ``out_dir`` with its own settings where ``settings`` differ.
        force: start over even if ``out_dir`` holds another retraining.
        download: let torchvision download the dataset.
        callback: called with the network's name (``searched``, ``joint`` or ``uniform``) and a
            :class:`~autoslim.train.Report` (``start``, ``step``, ``log``: ``loss``, ``lr``,
            ``images_per_second``; ``epoch``: the test accuracy of every config, by config name; ``end``).

    Raises:
        ValueError: a bad config (unknown unit, count above its maximum, another space), bad settings, a
            batch larger than the data, another retraining in ``out_dir`` (without ``force``).
        FileNotFoundError: a config or the dataset is not where it was looked for.
        DivergedError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    from .data import load_dataset

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("retrain runs in a single process: start it without torchrun")
    out = Path(out_dir)
    space, configs, channels = _load_configs(settings.configs)
    train, state, ignored = _open(out, settings.train, channels, resume=resume, force=force)
    settings = replace(settings, train=train)
    data = load_dataset(train.dataset, data_dir=train.data_dir, download=download, seed=train.seed,
                        search_size=train.search_size)
    if data.in_channels != space.in_channels:
        raise ValueError(f"space {space.name} takes {space.in_channels}-channel images but {data.name} has "
                         f"{data.in_channels}-channel ones")
    device = resolve_device(train.device)
    if device.type == "cpu":
        keep_freed_memory()
    names = [Path(p).stem for p in settings.configs]
    width = configs[0].source.get("uniform") if len(configs) == 1 else None  # autoslim cost --save-config's
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        width = None
    kind = "joint" if len(channels) > 1 else "searched" if width is None else "uniform"
    main = _Trainer(kind, names, space, channels, settings, data, out, device, callback)
    main.width = width
    if state is not None:
        main.restore(state)
    elif force:
        _remove_outputs(out)
    trainers = [main]
    if settings.baseline == "uniform":
        trainers.append(_uniform_trainer(main, configs[0], space, data, device, resume=resume, force=force,
                                         callback=callback))
    interrupted = False
    with StopRequest() as stop:
        for trainer in trainers:
            if trainer.run(stop):
                interrupted = True
                break
    baseline = None
    if len(trainers) > 1 and not interrupted:
        baseline = {**trainers[1].summary(), "dir": "uniform"}
        main.extra["baseline"] = baseline
        main.write_summary()
    return RetrainResult(out, main.summary(), main.model.eval(), baseline, interrupted, ignored)


def _uniform_trainer(main: _Trainer, config: ChannelConfig, space: SearchSpace, data: Any, device: torch.device, *,
                     resume: bool, force: bool,
                     callback: Callable[[str, Report], None] | None) -> _Trainer:
    """The trainer of the uniform network of at most the config's MACs, in ``OUT/uniform``."""
    supernet = build_supernet(space, num_classes=data.num_classes, input_size=data.image_size)
    macs = main.costs[0].macs
    found = uniform_within(supernet, macs=macs)
    if found is None:
        narrowest = supernet.cost(supernet.uniform_config(0.01)).macs
        raise ValueError(f"no uniform width of {space.name} is within the config's {macs:,} MACs (the narrowest, "
                         f"0.01x, has {narrowest:,}); retrain without --baseline")
    width, channels = found
    out = main.out / "uniform"
    train, state, _ = _open(out, main.settings.train, [channels], resume=resume and (out / CHECKPOINT_NAME).exists(),
                            force=force)
    path = out / "config.yaml"
    cost = supernet.cost(channels)
    uniform = ChannelConfig(space=config.space, channels=channels, space_options=dict(config.space_options),
                            cost={"macs": cost.macs, "params": cost.params, "input_size": data.image_size},
                            source={"uniform": width, "within": {"flops": macs}, "config": main.settings.configs[0]})
    save_config(path, uniform)
    settings = RetrainSettings((str(path.resolve()),), train)
    trainer = _Trainer("uniform", [f"uniform-{width:g}x"], space, [channels], settings, data, out, device, callback)
    trainer.width = width
    if state is not None:
        trainer.restore(state)
    elif force:
        _remove_outputs(out)
    return trainer


def _remove_outputs(out: Path) -> None:
    for name in _OUTPUTS:
        (out / name).unlink(missing_ok=True)


class _Trainer(TrainingLoop):
    """One network's training: model, optimizer, schedule, the loop, its directory."""

    metric_columns = METRIC_COLUMNS

    def __init__(self, name: str, members: list[str], space: SearchSpace, channels: list[dict[str, int]],
                 settings: RetrainSettings, data: Any, out: Path, device: torch.device,
                 callback: Callable[[str, Report], None] | None) -> None:
        train = settings.train
        self.name, self.members, self.space, self.channels = name, members, space, channels
        self.settings, self.train, self.data, self.out, self.device = settings, train, data, out, device
        self.callback = callback
        self.width: float | None = None
        self.extra: dict[str, Any] = {}
        self.what = f"training of the {name} network"
        self._check_batch_size(train.batch_size, data)
        self.space_options = space_options(space, num_classes=data.num_classes, input_size=data.image_size)
        self.model, self.costs = build_network(space, channels, num_classes=data.num_classes,
                                               input_size=data.image_size, seed=train.seed)
        self.joint = self.model if isinstance(self.model, JointNetwork) else None
        self.model.to(device)
        self._setup_schedule(self.model, train, data)
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
        self._restore_training(state, self.model)
        self.evaluation = [tuple(pair) for pair in state["evaluation"]]

    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "versions": {"autoslim": __version__, "torch": str(torch.__version__)},
            "network": self.name,
            "space_options": self.space_options,
            "channels": self.channels,
            "configs": list(self.settings.configs),
            "settings": self.train.to_dict(),
            "split": self.data.split_info(),
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "finished": self.epoch >= self.train.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "metrics": self.rows,
            "evaluation": [list(pair) for pair in self.evaluation],
            "seconds": self._elapsed(),
        }

    def _save(self) -> None:
        with self._writing():
            atomic_write(self.out / CHECKPOINT_NAME, lambda stream: torch.save(self._state(), stream))
            self.write_summary()
            self._write_metrics()

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json``: the first config's test accuracy and cost, the run's facts."""
        members = []
        for i, name in enumerate(self.members):
            accuracy, loss = self.evaluation[i] if self.evaluation else (None, None)
            members.append({"network": name, "config": self.settings.configs[i], "accuracy": accuracy, "loss": loss,
                            "macs": self.costs[i].macs, "params": self.costs[i].params, "channels": self.channels[i]})
        seconds = self._elapsed()
        first = members[0]
        summary = {"network": self.name, "space": self.train.space, "dataset": self.data.name,
                   **{key: first[key] for key in ("config", "accuracy", "loss", "macs", "params")},
                   **({"width": self.width} if self.width is not None else {}), "epochs": self.epoch, "planned_epochs": self.train.epochs,
                   "finished": self.epoch >= self.train.epochs, "steps": self.step, "seconds": round(seconds, 2),
                   "seconds_per_epoch": round(seconds / self.epoch, 2) if self.epoch else None,
                   "images_per_second": round(self.step * self.train.batch_size / max(seconds, 1e-9), 1),
                   "batch_size": self.train.batch_size, "lr": self.train.lr, "seed": self.train.seed,
                   "device": str(self.device), "channels": first["channels"], "checkpoint": CHECKPOINT_NAME}
        if self.joint is not None:
            summary["joint"] = members
        return {**summary, **self.extra}

    def write_summary(self) -> None:
        with self._writing():
            write_json(self.out / "summary.json", self.summary())

    # -- the loop ------------------------------------------------------------------------------

    def _report(self, kind: str, **values: float) -> None:
        if self.callback is not None:
            epoch = self.epoch if kind in ("epoch", "end") else min(self.train.epochs, self.epoch + 1)
            self.callback(self.name, Report(kind, epoch, self.train.epochs, self.step, self.total_steps, values))

    def _select(self, index: int) -> None:
        if self.joint is not None:
            self.joint.select(index)

    def _prepare(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def run(self, stop: StopRequest) -> bool:
        """Train the remaining epochs, testing and saving after each; True if a stop request interrupted it."""
        self.out.mkdir(parents=True, exist_ok=True)
        with self._writing():
            write_yaml(self.out / "run.yaml", {**self.settings.to_dict(), "channels": self.channels},
                       header="autoslim retrain: the configs, channels and resolved settings of this retraining")
        self._session = time.perf_counter()
        self._report("start", start_step=self.step, resumed=float(self.step > 0 or self.epoch > 0))
        interrupted = False
        while self.epoch < self.train.epochs:
            if stop.requested:  # arrived during the last test or save
                interrupted = True
                break
            completed = self._train_epoch(stop)
            if completed:
                self._test()
                self.epoch += 1
            self._save()
            if not completed:
                interrupted = True
                break
            self._report("epoch", **{name: accuracy for name, (accuracy, _) in zip(self.members, self.evaluation)})
        self.seconds, self._session = self._elapsed(), None  # the next network's time is not this one's
        self._select(0)
        self._report("end")
        return interrupted

    def _train_epoch(self, stop: StopRequest) -> bool:
        """Train the rest of the current epoch; False if a stop was requested first."""
        train, epoch, members = self.train, self.epoch, len(self.members)
        # the same order and augmentation as supernet training
        generator = torch.Generator().manual_seed(derive_seed("data", train.seed, epoch))
        batches = self.data.batches("train", train.batch_size, shuffle=True, augment=True, generator=generator,
                                    drop_last=True, device=self.device, start=self.step - epoch * self.steps_per_epoch)
        self.model.train()
        interval = torch.zeros(members, device=self.device)
        steps, tick = 0, time.perf_counter()
        for images, labels in batches:
            images = self._prepare(images)
            torch.manual_seed(derive_seed("torch", train.seed, 0, self.step))  # dropout, whatever the resume point
            self.optimizer.zero_grad(set_to_none=True)
            for index in range(members):
                self._select(index)
                with self._autocast():
                    loss = F.cross_entropy(self.model(images), labels, label_smoothing=train.label_smoothing)
                loss.backward()
                interval[index] += loss.detach().float()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            steps += 1
            self._report("step")
            if self.step % train.log_every == 0 or self.step % self.steps_per_epoch == 0 or stop.requested:
                self._log(interval / steps, steps, tick)
                interval.zero_()
                steps, tick = 0, time.perf_counter()
                if stop.requested:
                    return False
        return True

    def _log(self, losses: Tensor, steps: int, tick: float) -> None:
        values = losses.tolist()
        bad = [value for value in values if not math.isfinite(value)]
        if bad:
            self._diverged(f"loss {bad[0]}")
        seconds = time.perf_counter() - tick
        common = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), "kind": "train",
                  "lr": float(f"{self.scheduler.get_last_lr()[0]:.6g}"),
                  "images_per_second": round(steps * self.train.batch_size / max(seconds, 1e-9), 1),
                  "seconds": round(self._elapsed(), 2)}
        for name, loss in zip(self.members, values):
            self.rows.append({**common, "network": name, "loss": round(loss, 5)})
        self._write_metrics()
        self._report("log", loss=sum(values) / len(values), lr=common["lr"],
                     images_per_second=common["images_per_second"])

    def _test(self) -> None:
        size = min(self.train.eval_batch_size, len(self.data.test))
        results = []
        for index in range(len(self.members)):
            self._select(index)
            with self._autocast():
                batches = ((self._prepare(x), y) for x, y in self.data.batches("test", size, device=self.device))
                results.append(evaluate(self.model, batches))
        self._select(0)
        bad = [loss for _, loss in results if not math.isfinite(loss)]
        if bad:
            self._diverged(f"test loss {bad[0]}")
        self.evaluation = [(round(accuracy, 6), round(loss, 6)) for accuracy, loss in results]
        for name, (accuracy, loss) in zip(self.members, self.evaluation):
            self.rows.append({"step": self.step, "epoch": self.epoch + 1, "kind": "eval", "network": name,
                              "test_accuracy": accuracy, "test_loss": loss, "seconds": round(self._elapsed(), 2)})
