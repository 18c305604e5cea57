"""Supernet checkpoints, and reopening a finished (or interrupted) training run.

A checkpoint describes itself: besides the weights, optimizer, scheduler, RNG states, epoch and step it
holds the space name and options (classes, input size), the channel units, the dataset with its
train/search split and the settings, so the supernet and its data can be rebuilt from it alone. A run started
from a trained network (``train-supernet --init``) also holds ``widths``, the maxima of its supernet where they
are narrower than the space's, and ``init``, where its weights came from and their test accuracy as loaded. It holds
only tensors and plain Python values (never pickled modules) and is read with
``torch.load(weights_only=True)``; an unreadable or truncated file is a ``ValueError`` naming it.

Reopening a run (what ``autoslim search`` does)::

    from autoslim.checkpoint import load_run
    from .training.calibrate import evaluate, recalibrate

    run = load_run("runs/digits", device="cpu")   # run.supernet holds the trained weights
    data = run.load_data()                         # same dataset, data_dir, seed and search split
    run.supernet.set_config(config)
    recalibrate(run.supernet, data.batches("train", 256, shuffle=True, augment=True, device=run.device), 8)
    accuracy, loss = evaluate(run.supernet, data.batches("search", 500, device=run.device))

:class:`Run` also carries ``settings`` (:class:`~autoslim.training.settings.TrainSettings`), ``space``
(:class:`~autoslim.spaces.SearchSpace`), ``space_options``, ``split`` (the recorded
:meth:`~autoslim.data.DataBundle.split_info`), ``epoch``, ``step``, ``finished`` and ``evaluation``
(the last test accuracies and losses of the largest and smallest configs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .io import atomic_write
from .spaces import SearchSpace, build_supernet, configure_space, load_space
from .network.supernet import Supernet

if TYPE_CHECKING:
    from .training.settings import TrainSettings
    from .data.bundle import DataBundle

__all__ = ["FORMAT", "CHECKPOINT_NAME", "Run", "load_run", "load_checkpoint", "save_checkpoint", "rebuild_supernet",
           "unit_records", "read_state", "save_weights_only", "TRAINING_KEYS"]

FORMAT = "autoslim-supernet/1"
CHECKPOINT_NAME = "checkpoint.pt"
# What only resuming the training needs; a weights-only copy (save_weights_only) leaves these out.
TRAINING_KEYS = ("optimizer", "scheduler", "rng")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a failed write (full disk, Ctrl-C) keeps the previous file."""
    atomic_write(path, lambda stream: torch.save(state, stream))


def save_weights_only(source: str | os.PathLike, target: str | os.PathLike) -> int:
    """Copy the checkpoint at ``source`` to ``target`` without what only resuming the training needs (optimizer,
    schedule, RNG states): about half the size, and enough for :func:`load_run` and ``autoslim search``. The
    copy is marked ``weights_only``; ``train-supernet`` refuses to resume from it. Returns the bytes written.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint` for ``source``.
    """
    state = load_checkpoint(source)
    kept = {key: value for key, value in state.items() if key not in TRAINING_KEYS}
    kept["weights_only"] = True
    save_checkpoint(target, kept)
    return Path(target).stat().st_size


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a supernet checkpoint safely (``weights_only``: tensors and plain values only).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is truncated, corrupt or not an autoslim supernet checkpoint (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (autoslim train-supernet --out DIR writes one)")
    return read_state(path, FORMAT, "supernet", map_location=map_location)


def read_state(path: str | os.PathLike, expected_format: str, what: str, *,
               map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state read safely (``weights_only``), with unreadable files as one-line errors.

    Raises:
        ValueError: the file is truncated, corrupt or of another format than ``expected_format``.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip, pickle and I/O errors alike: none of them may escape as a traceback
        reason = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())[:160] or type(error).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {reason}") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not an autoslim {what} checkpoint (format {found!r}, expected {expected_format!r})")
    return state


def unit_records(supernet: Supernet) -> list[dict[str, Any]]:
    """The channel units as plain values: name, maximum, choices and why frozen (None if slimmable)."""
    return [{"name": u.name, "maximum": u.maximum, "choices": list(u.choices), "frozen": u.frozen} for u in supernet.units]


def rebuild_supernet(state: dict[str, Any], *, source: str = "checkpoint") -> tuple[SearchSpace, Supernet]:
    """The space and an untrained supernet with the architecture recorded in ``state``: the space's, or, for a run
    started from a trained network (``train-supernet --init``), the space's narrowed to the recorded ``widths``.

    Raises:
        ValueError: the space cannot be loaded, or its units differ from the recorded ones (the space file
            changed since the run).
    """
    from .training.settings import settings_from_dict

    settings = settings_from_dict(state["settings"], source)
    options = state["space_options"]
    space = configure_space(load_space(settings.space), width_mult=options.get("width_mult"))
    supernet = build_supernet(space, num_classes=options["num_classes"], input_size=options["input_size"],
                              widths=state.get("widths"))
    if unit_records(supernet) != state["units"]:
        raise ValueError(f"{source}: the channel units of space {settings.space!r} differ from the ones the run was "
                         "trained with (was the space file changed?)")
    return space, supernet


@dataclass
class Run:
    """A supernet training run reopened from its directory (see the module docstring).

    Attributes:
        path: the run directory.
        settings: the settings it was trained with.
        space: its search space.
        space_options: ``num_classes``, ``input_size``, ``in_channels`` and ``width_mult`` of the supernet.
        supernet: the supernet with the trained weights, on ``device``, in eval mode.
        device: where the supernet is.
        split: the recorded train/search/test split (:meth:`autoslim.data.DataBundle.split_info`).
        epoch: completed epochs.
        step: optimizer steps done.
        finished: whether all ``settings.epochs`` epochs were trained.
        evaluation: the last test accuracies and losses (``largest_accuracy``, ``smallest_accuracy``, ...).
    """

    path: Path
    settings: TrainSettings
    space: SearchSpace
    space_options: dict[str, Any]
    supernet: Supernet
    device: torch.device
    split: dict[str, Any]
    epoch: int
    step: int
    finished: bool
    evaluation: dict[str, float] = field(default_factory=dict)

    def load_data(self, *, data_dir: str | os.PathLike | None = None, download: bool = False) -> DataBundle:
        """The run's dataset with the same train/search split (same dataset, seed and search size).

        Args:
            data_dir: where the data lives now (default: where it was during training).
            download: let torchvision download it.

        Raises:
            ValueError: the data found there splits differently from the data the run was trained on.
        """
        from .data.sources import load_dataset

        bundle = load_dataset(self.settings.dataset, data_dir=data_dir if data_dir is not None else self.settings.data_dir,
                              download=download, seed=self.settings.seed, search_size=self.settings.search_size)
        found = bundle.split_info()
        if found != self.split:
            changed = ", ".join(f"{k} {self.split.get(k)!r} -> {v!r}" for k, v in found.items() if self.split.get(k) != v)
            raise ValueError(f"the {bundle.name} data found now differs from the data of run {self.path} ({changed})")
        return bundle


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> Run:
    """Reopen the run in ``run_dir``: its settings, space and the supernet with trained weights.

    Raises:
        FileNotFoundError: ``run_dir`` holds no checkpoint.
        ValueError: the checkpoint is unreadable, or its space no longer matches it.
    """
    path = Path(run_dir)
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() or not path.suffix else path
    state = load_checkpoint(checkpoint)
    space, supernet = rebuild_supernet(state, source=str(checkpoint))
    supernet.load_state_dict(state["model"])
    device = torch.device(device)
    supernet.to(device).eval()
    from .training.settings import settings_from_dict

    settings = settings_from_dict(state["settings"], str(checkpoint))
    return Run(path=checkpoint.parent, settings=settings, space=space, space_options=dict(state["space_options"]),
               supernet=supernet, device=device, split=dict(state["data"]["split"]), epoch=int(state["epoch"]),
               step=int(state["step"]), finished=bool(state["finished"]), evaluation=dict(state.get("evaluation") or {}))
