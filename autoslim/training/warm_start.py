"""Starting a training from trained weights instead of fresh ones (issue 21, parts 2 and 3).

- A supernet from a trained network (``train-supernet --init WEIGHTS``): :func:`supernet_from_weights` reads the
  weights (:func:`autoslim.weights.read_weights`), builds the space's supernet at the widths they show
  (:mod:`autoslim.network.widths`: its largest config *is* the trained network), loads them with the trained
  network's BatchNorm statistics, and orders every unit's channels by importance
  (:func:`~autoslim.network.ordering.sort_channels`, which keeps the function), so that every prefix keeps the
  most important channels before the sandwich-rule fine-tune makes every width work.
- A network from a supernet (``retrain CONFIG --init supernet``): :func:`sliced_network` cuts a config out of a
  trained supernet with BatchNorm statistics recalibrated for it, the start of a short fine-tune.

Both runs record where they started (``init``, in ``run.yaml`` and the checkpoint); :func:`check_init` refuses to
continue a run in a directory that started elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from torch import Tensor, nn

from ..network.ordering import sort_channels
from ..network.static import materialize
from ..network.supernet import Supernet
from ..network.widths import check_keys, load_weights, narrow, widths_of
from ..spaces import SearchSpace, build_supernet
from ..weights import file_sha256, read_weights, weights_file
from .calibrate import recalibrate

__all__ = ["supernet_from_weights", "sliced_network", "check_init", "describe_init", "weights_sha256"]


def supernet_from_weights(space: SearchSpace, path: str, *, num_classes: int, input_size: int
                          ) -> tuple[Supernet, dict[str, int] | None, str]:
    """The supernet whose largest config is the trained network at ``path``, with its weights, channels ordered.

    Args:
        space: the search space (at the width given by the user, if any).
        path: a weights file or retrain directory (see :func:`autoslim.weights.read_weights`).
        num_classes, input_size: of the data the supernet is for.

    Returns:
        The supernet (on the CPU, in training mode), its per-unit maxima when narrower than the space's
        supernet (None when it is the space's own), and the SHA-256 of the file the weights came from.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: unreadable weights, or weights that do not fit: one line naming the first bad key.
    """
    weights, file = read_weights(path)
    supernet = build_supernet(space, num_classes=num_classes, input_size=input_size)
    what = f"the network of space {space.name} ({num_classes} classes)"
    check_keys(supernet.model.state_dict(), weights, where=str(file), what=what)
    hint = (f"start from a wider supernet with --width-mult (now {space.width_mult:g})" if space.width_arg
            else f"space {space.name} has one width, so it cannot hold this network")
    widths = widths_of(supernet, weights, where=str(file), what=f"{what} at width {space.width_mult:g}", hint=hint)
    narrowed = widths != supernet.largest_config()
    if narrowed:
        supernet = narrow(supernet, widths, groups=space.groups, divisor=space.divisor, min_ratio=space.min_ratio)
    load_weights(supernet, weights, where=str(file), what=what)
    sort_channels(supernet)
    return supernet, (widths if narrowed else None), file_sha256(file)


def sliced_network(supernet: Supernet, config: Mapping[str, int], batches: Iterable[tuple[Tensor, Tensor]],
                   num_batches: int) -> nn.Module:
    """The plain network of ``config`` with ``supernet``'s weights and BatchNorm statistics recalibrated for it.

    The supernet's running statistics fit its largest config (its last evaluation), so they are recomputed for
    ``config`` on ``num_batches`` of ``batches`` (:func:`~autoslim.training.calibrate.recalibrate`) before the
    network is cut out (:func:`~autoslim.network.static.materialize`). The supernet is left at the config it had.
    """
    previous = supernet.config
    supernet.set_config(supernet.validate_config(config))
    try:
        recalibrate(supernet, batches, num_batches)
        return materialize(supernet)
    finally:
        supernet.set_config(previous)


def describe_init(init: str | None, *, start: str) -> str:
    """How a run's weights started, for messages: ``from scratch`` or ``from PATH``, with ``start`` before the path."""
    return "from scratch" if init is None else f"{start} {init}"


def check_init(out: Path, noun: str, saved: str | None, given: str | None, *, start: str, flags: tuple[str, str],
               saved_sha256: str | None = None) -> None:
    """Refuse to continue the ``noun`` in ``out``, which started from ``saved``, as one starting from ``given``.

    Args:
        start: how the message names a start from a path (``from the trained network``).
        flags: how the user asks for a start from a path (``--init PATH``) and from scratch (``no --init``).
        saved_sha256: the SHA-256 of the weights file the run started from, where recorded: ``given`` is then the
            same start if its file has the same digest (the run and its source moved to another folder or machine).

    Raises:
        ValueError: ``saved`` and ``given`` differ.
    """
    if saved == given:
        return
    if saved is not None and given is not None and saved_sha256 is not None and weights_sha256(given) == saved_sha256:
        return
    again = flags[0].replace("PATH", saved) if saved is not None else flags[1]
    raise ValueError(f"{out} holds a {noun} {describe_init(saved, start=start)}, not "
                     f"{describe_init(given, start=start)}: continue it with {again}, use another --out, or --force to "
                     "start over")


def weights_sha256(path: str) -> str | None:
    """The SHA-256 of the weights file at ``path`` (see :func:`~autoslim.weights.weights_file`), None if none."""
    try:
        return file_sha256(weights_file(path))
    except FileNotFoundError:
        return None
