"""Settings of a supernet training run: the space's recipe, overridden by the user, saved as ``run.yaml``.

:class:`TrainSettings` is frozen. :func:`resolve_settings` fills it from a search space's recipe (the
supernet trains for ``fraction`` of the recipe's epochs, AutoSlim section 3.2, and the learning rate scales
linearly with the batch size) and the options the user gave. :func:`load_settings` reads a saved
``run.yaml`` back; unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..io import read_yaml, write_yaml
from ..spaces import SPACES_DIR, SearchSpace

__all__ = ["TrainSettings", "resolve_settings", "load_settings", "save_settings", "settings_from_dict",
           "RUNTIME_KEYS", "IDENTITY_KEYS", "SCHEDULES", "space_reference",
           "recipe_settings", "FULL_RUN_EPOCHS", "FINE_TUNE_FRACTION", "FINE_TUNE_LR_SCALE"]

IDENTITY_KEYS = ("space", "dataset")
"""A run directory belongs to one space and dataset: another one there needs ``--force``."""
RUNTIME_KEYS = ("device", "amp", "channels_last", "log_every", "data_dir")
"""Settings that may change when a run resumes: they do not change what is computed on CPU."""

_AUTO_OFF_ON = ("auto", "off", "on")
SCHEDULES = ("cosine", "one-cycle")
"""Learning-rate schedules (:func:`autoslim.training.optim.lr_factor`)."""
FULL_RUN_EPOCHS = 30
"""The epochs of a space's recipe that does not name them."""
FINE_TUNE_FRACTION = 0.05
"""The share of the recipe's epochs that a run starting from trained weights (``init``) trains for by default: a
quarter of a supernet's 20% from scratch (2 epochs of the digits recipe, 10 of CIFAR's, 12 of ImageNet's 250).
Measured once on digits (a trained 1.0x digits CNN, 98.9%): 2 epochs bring its 0.5x network to 90.5%, where a
supernet trained from scratch for 6 epochs reaches 91.9% and 6 fine-tuning epochs 93.6%; the narrowest configs
need longer (53% at 2 epochs, 71% at 6), so give ``--epochs`` where the budget is near them."""
FINE_TUNE_LR_SCALE = 0.1
"""The default peak learning rate of a run starting from trained weights, as a share of the recipe's: the rate a
step schedule reaches after its first decay, small enough to keep what the weights learnt (on digits, 2 epochs at
the recipe's rate took the trained network from 98.9% to 94.4%; at a tenth it stayed at 98.9%)."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a supernet training run.

    Attributes:
        space: search space name (or the absolute path of its YAML file).
        dataset: dataset name (see :data:`autoslim.data.DATASETS`).
        data_dir: where the dataset lives (None: the dataset's default).
        seed: seed of the model initialisation, the train/search split, the data order and the subnets.
        search_size: images held out of the training set for the search (count, fraction, or None: 10%).
        epochs: supernet training epochs.
        batch_size: global batch size (split over the processes of a distributed run).
        lr: peak learning rate at ``batch_size``.
        momentum: SGD momentum (Nesterov when ``nesterov``).
        nesterov: use Nesterov momentum.
        weight_decay: L2 weight decay of conv and linear weights (never of BatchNorm and biases).
        warmup_epochs: linear warm-up, then cosine decay to zero, both per step (``schedule: cosine``).
        schedule: the learning-rate schedule per step: ``cosine`` (warm-up then cosine to zero) or ``one-cycle``
            (from lr/25 up to lr over the first 15% of the steps, then down to lr/1e4, both by half a cosine).
        label_smoothing: label smoothing of the largest subnet's loss.
        num_subnets: subnets per batch: the largest, the smallest and ``num_subnets - 2`` random ones.
        calib_batches: training batches used to recalibrate BatchNorm before each evaluation.
        eval_batch_size: batch size of recalibration and evaluation.
        log_every: steps between rows of ``metrics.csv`` (and host syncs).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast: ``auto`` (on for CUDA with bf16 support), ``on``, ``off``.
        channels_last: channels-last memory format: ``auto`` (off; see the README), ``on``, ``off``.
        width_mult: the supernet's width multiplier, for spaces whose builder takes one (None: the space's).
        init: where the weights start (absolute path; None: fresh weights): for a supernet, a trained network's
            weights (``train-supernet --init``); for a retraining, the supernet run its network is sliced from
            (``retrain --init supernet``).
    """

    space: str
    dataset: str = "digits"
    data_dir: str | None = None
    seed: int = 0
    search_size: int | float | None = None
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    num_subnets: int = 4
    calib_batches: int = 8
    eval_batch_size: int = 256
    log_every: int = 50
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    width_mult: float | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("num_subnets", self.num_subnets, 2)
        _check_int("calib_batches", self.calib_batches, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("log_every", self.log_every, 1)
        _check_int("seed", self.seed, 0)
        _check_float("lr", self.lr, positive=True)
        _check_float("weight_decay", self.weight_decay)
        _check_float("warmup_epochs", self.warmup_epochs)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a positive momentum")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.amp not in _AUTO_OFF_ON or self.channels_last not in _AUTO_OFF_ON:
            raise ValueError(f"amp and channels_last must be one of {', '.join(_AUTO_OFF_ON)}")
        if self.width_mult is not None:
            _check_float("width_mult", self.width_mult, positive=True)
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ValueError(f"init must be a path, got {self.init!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, other: TrainSettings, *, ignore: tuple[str, ...] = RUNTIME_KEYS) -> dict[str, tuple[Any, Any]]:
        """``{key: (self's value, other's value)}`` for every setting not in ``ignore`` that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (mine[key], theirs[key]) for key in mine if key not in ignore and mine[key] != theirs[key]}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")


def resolve_settings(space: SearchSpace, *, fraction: float | None = None, **overrides: Any) -> TrainSettings:
    """Settings from ``space``'s recipe, overridden by ``overrides`` (None values are ignored).

    Without ``epochs``, the supernet trains for ``fraction`` (default: the recipe's) of the recipe's epochs.
    Without ``lr``, the recipe's rate is scaled by ``batch_size / recipe.batch_size``.

    A run given ``init`` (it starts from trained weights) fine-tunes: by default it trains for
    :data:`FINE_TUNE_FRACTION` of the recipe's epochs at :data:`FINE_TUNE_LR_SCALE` of its learning rate, without
    warm-up (which protects random weights from a large rate; trained weights at a tenth of it need none).

    Raises:
        ValueError: for an unknown setting or an invalid value.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    for key in given:
        if key not in known:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
    recipe = space.recipe
    if "epochs" in given and fraction is not None:
        raise ValueError("give the epochs or the fraction of the recipe's epochs, not both")
    fine_tune = given.get("init") is not None
    if "epochs" not in given:
        if fraction is None:
            fraction = FINE_TUNE_FRACTION if fine_tune else space.fraction
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        given["epochs"] = max(1, round(recipe.epochs * fraction))
    batch_size = given.setdefault("batch_size", recipe.batch_size)
    if "lr" not in given and isinstance(batch_size, numbers.Real):
        lr = recipe.lr * batch_size / recipe.batch_size * (FINE_TUNE_LR_SCALE if fine_tune else 1.0)
        given["lr"] = float(f"{lr:.12g}")  # 0.02, not 0.020000000000000004
    if fine_tune:
        given.setdefault("warmup_epochs", 0.0)
        given["init"] = str(Path(given["init"]).resolve())
    for key in ("momentum", "nesterov", "weight_decay", "warmup_epochs", "label_smoothing", "num_subnets"):
        given.setdefault(key, getattr(recipe, key))
    given.setdefault("dataset", space.dataset)
    given.setdefault("space", space_reference(space))
    if given.get("data_dir") is not None:
        given["data_dir"] = str(Path(given["data_dir"]).resolve())  # a run reopens from any directory
    return TrainSettings(**given)


def recipe_settings(space: str, dataset: str, **recipe: Any) -> TrainSettings:
    """A space's recipe (the settings of a full from-scratch run): ``recipe`` over the defaults, 30 epochs."""
    return TrainSettings(space=space, dataset=dataset, **{"epochs": FULL_RUN_EPOCHS, **recipe})


def space_reference(space: SearchSpace) -> str:
    """The space as a run records it: a path that reopens from any directory, or the bundled or torchvision name."""
    if ".py:" in space.name:  # a user's model file
        file, _, function = space.name.rpartition(":")
        return f"{Path(file).resolve()}:{function}"
    if space.path and not _bundled(space):
        return str(Path(space.path).resolve())
    return space.name


def _bundled(space: SearchSpace) -> bool:
    return space.path is not None and Path(space.path).resolve().parent == SPACES_DIR


def settings_from_dict(data: Any, source: str = "settings") -> TrainSettings:
    """Settings from a mapping (a loaded ``run.yaml`` or checkpoint); unknown or missing keys name the key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: settings must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    for key in data:
        if key not in known:
            raise ValueError(f"{source}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
    if "space" not in data:
        raise ValueError(f"{source}: missing setting 'space'")
    try:
        return TrainSettings(**data)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def load_settings(path: str | Path) -> TrainSettings:
    """Read a ``run.yaml`` written by :func:`save_settings`."""
    return settings_from_dict(read_yaml(path), str(path))


def save_settings(path: str | Path, settings: TrainSettings) -> None:
    """Write ``settings`` as YAML (atomically)."""
    write_yaml(path, settings.to_dict(),
               header="autoslim train-supernet: the resolved settings of this run (autoslim.training.settings.load_settings)")
