"""The networks a retraining trains: its settings, the checked config files, fresh networks and trained ones.

A channel config is worth what the network built from it reaches when trained on its own (AutoSlim section
4). :func:`resolve_retrain` gives a retraining the space's full recipe on the data of the supernet run the
config was searched from; :func:`load_configs` checks the config files against their space;
:func:`build_network` builds the static network of one config (or the joint network of several) with fresh
weights; :func:`uniform_baseline` picks the uniform-width network of at most a config's MACs; and
:func:`load_retrained` reopens a trained network from its directory. :func:`supernet_run` reopens the supernet
run a network is sliced from when it starts from the supernet's weights (``retrain --init supernet``).
:mod:`autoslim.training.retraining` trains them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..channel_config import ChannelConfig, load_config
from ..checkpoint import CHECKPOINT_NAME, read_state
from ..network.static import materialize
from ..network.supernet import Supernet, uniform_within
from ..spaces import SearchSpace, build_supernet, configure_space, load_space
from .joint import JointNetwork
from .settings import TrainSettings, load_settings, resolve_settings, settings_from_dict

__all__ = ["FORMAT", "BASELINES", "RetrainSettings", "resolve_retrain", "load_configs", "build_network",
           "uniform_baseline", "supernet_run", "read_retrained", "load_retrained"]

FORMAT = "autoslim-retrain/1"
BASELINES = ("uniform",)


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
        if self.train.init is not None and len(self.configs) > 1:
            raise ValueError("--init supernet fine-tunes one config (and its baseline); train --joint configs with "
                             "--init scratch")

    def to_dict(self) -> dict[str, Any]:
        return {"configs": list(self.configs), "baseline": self.baseline, "settings": self.train.to_dict()}


def resolve_retrain(config: str | os.PathLike, *, joint: Sequence[str | os.PathLike] = (), baseline: str | None = None,
                    init: str | None = None, **overrides: Any) -> RetrainSettings:
    """Settings of a retraining: the config's space's full recipe, overridden by ``overrides``.

    Without ``epochs`` the network trains for the recipe's epochs (a full run, not the supernet's fraction).
    The dataset, data directory, seed and search split default to those of the supernet run the config
    was searched from (its ``source.run``), so the network trains on the same images; else to the space's.

    A network that starts from the supernet's weights (``init``) fine-tunes instead, with the defaults of
    :func:`~autoslim.training.settings.resolve_settings` for a run given ``init``: 5% of the recipe's epochs, a
    tenth of its learning rate, no warm-up.

    Args:
        config: the config file.
        joint: more config files to train with it as one network (switchable BatchNorm).
        baseline: ``uniform`` to train the uniform-width network beside it.
        init: where the weights start: ``scratch`` (fresh weights), ``supernet`` (sliced from the config's supernet
            run, its ``source.run``) or a supernet run directory. None: ``supernet`` when that run itself started
            from a trained network (``train-supernet --init``), else ``scratch``.
        overrides: :class:`~autoslim.training.settings.TrainSettings` fields (None values are ignored).

    Raises:
        FileNotFoundError: a config file is missing, or the supernet run to start from.
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
    overrides["init"] = _init_run(init, main, paths[0], source)
    fraction = None if overrides.get("epochs") is not None or overrides["init"] is not None else 1.0
    return RetrainSettings(paths, resolve_settings(space, fraction=fraction, **overrides), baseline)


def _init_run(init: str | None, config: ChannelConfig, path: str, source: TrainSettings | None) -> str | None:
    """The supernet run a retraining starts from (None: from scratch), as :func:`resolve_retrain`'s ``init`` says."""
    run = config.source.get("run") if isinstance(config.source, dict) else None
    if init is None:
        init = "supernet" if source is not None and source.init is not None else "scratch"
    if init == "scratch":
        return None
    if init == "supernet":
        if not run:
            raise ValueError(f"{path} names no supernet run (source.run): pass --init RUN, the supernet run directory")
        init = str(run)
    if not (Path(init) / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"--init: {init} holds no supernet run ({CHECKPOINT_NAME}); pass --init scratch, or "
                                "the directory of the supernet run")
    return str(Path(init).resolve())


def supernet_run(path: str, config: ChannelConfig, config_path: str, *, device: torch.device) -> Supernet:
    """The trained supernet of the run at ``path``, checked to be the one ``config`` was made for, on ``device``.

    Raises:
        FileNotFoundError, ValueError: no run there, an unreadable checkpoint, a run of another space or one whose
            supernet cannot hold the config (naming the unit).
    """
    from ..checkpoint import load_run

    run = load_run(path, device=device)
    if run.settings.space != config.space or dict(run.space_options) != dict(config.space_options):
        raise ValueError(f"{config_path}: the config is for space {config.space!r} {dict(config.space_options)}, but "
                         f"the supernet of {path} is of {run.settings.space!r} {dict(run.space_options)}")
    try:
        run.supernet.validate_config(config.channels)
    except ValueError as error:
        raise ValueError(f"{config_path} does not fit the supernet of {path}: {error}") from None
    return run.supernet


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


def load_configs(paths: Sequence[str]) -> tuple[SearchSpace, list[ChannelConfig], list[dict[str, int]]]:
    """Load and check the config files: one space, valid channels. Errors name the file.

    Returns:
        The space, the configs and their validated channels.
    """
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
    config (:func:`autoslim.network.static.materialize`): a plain module for one config, a
    :class:`~autoslim.training.joint.JointNetwork` for several. The same seed gives every config the same initial
    weights where they overlap, so a searched and a uniform network start alike.
    """
    torch.manual_seed(seed)
    supernet = build_supernet(space, num_classes=num_classes, input_size=input_size)
    channels = [supernet.validate_config(c) for c in channels]
    costs = [supernet.cost(c) for c in channels]
    network = materialize(supernet, channels[0]) if len(channels) == 1 else JointNetwork(supernet, channels)
    return network, costs


def uniform_baseline(space: SearchSpace, config: ChannelConfig, macs: int, *, path: str, num_classes: int,
                     input_size: int, supernet: Supernet | None = None) -> tuple[float, ChannelConfig]:
    """The widest uniform network of at most ``macs``: its width and its config (whose source is ``path``).

    Args:
        supernet: the supernet it must be sliced from (``--init supernet``), whose uniform widths may end below the
            space's (a supernet started from a trained network); None: the space's.

    Raises:
        ValueError: even the narrowest uniform width has more MACs.
    """
    if supernet is None:
        supernet = build_supernet(space, num_classes=num_classes, input_size=input_size)
    found = uniform_within(supernet, macs=macs)
    if found is None:
        narrowest = supernet.cost(supernet.uniform_config(0.01)).macs
        raise ValueError(f"no uniform width of {space.name} is within the config's {macs:,} MACs (the narrowest, "
                         f"0.01x, has {narrowest:,}); retrain without --baseline")
    width, channels = found
    cost = supernet.cost(channels)
    return width, ChannelConfig(space=config.space, channels=channels, space_options=dict(config.space_options),
                                cost={"macs": cost.macs, "params": cost.params, "input_size": input_size},
                                source={"uniform": width, "within": {"flops": macs}, "config": path})


def read_retrained(path: Path) -> dict[str, Any]:
    """The state of a retrained network's checkpoint (ValueError when unreadable or of another format)."""
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
    state = read_retrained(checkpoint)
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
