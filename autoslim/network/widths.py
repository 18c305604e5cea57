"""A supernet whose maximum is a trained network: the widths its weights show, the supernet narrowed to them, and
the weights checked key by key and loaded (issue 21, part 2).

A trained network of a space need not be the space's supernet: torchvision's MobileNetV2 is the 1.0x network of a
1.5x space, and a network retrained from a searched config has a different count in every unit. Its state dict
says which: :func:`widths_of` reads each slimmable unit's count from the output dimension of the unit's first
producer (a conv or linear layer). :func:`narrow` builds the supernet at those maxima: the space's supernet sliced to
them (:func:`~autoslim.network.static.materialize`) and traced again, with the same channel-choice rules. Every
trained network of the family fits this way, not only the uniform ones; a unit wider than the space's supernet
cannot be sliced out of it and is refused, naming the key.

The narrowed supernet's uniform configs stay the family's networks (the space's builder at width ``w``); its
``width_mult`` is the widest of them that fits inside the trained network (:func:`fitting_width`), so the uniform
networks a search or a baseline compares with are never clipped.

:func:`check_keys` and :func:`load_weights` compare a state dict with the network's, naming the first bad key:
missing, unexpected, of another shape or not a tensor. A missing ``num_batches_tracked`` (weights saved before
torch 0.4.1 had it) keeps the network's own: it only matters to BatchNorm with ``momentum=None``.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from .static import materialize
from .supernet import Supernet, convert, last_accepted

__all__ = ["widths_of", "narrow", "fitting_width", "check_keys", "load_weights"]

_OPTIONAL = "num_batches_tracked"


def _shape(value: Any) -> str:
    return "[" + ", ".join(str(d) for d in value.shape) + "]"


def check_keys(expected: Mapping[str, Tensor], weights: Mapping[str, Any], *, where: str, what: str) -> None:
    """Raise ValueError naming the first key of the network that ``weights`` lacks, else the first one it has extra.

    Args:
        expected: the network's state dict.
        weights: the state dict given.
        where: the file the weights came from (the message starts with it).
        what: the network, for the message (``the network of space digits_cnn (10 classes)``).
    """
    missing = [key for key in expected if key not in weights and not key.endswith(_OPTIONAL)]
    extra = [key for key in weights if key not in expected]
    def more(keys: list[str]) -> str:
        return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""

    if missing and extra:
        raise ValueError(f"{where}: missing key {missing[0]!r}{more(missing)} of {what}, unexpected key {extra[0]!r}"
                         f"{more(extra)}: the weights of another architecture?")
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}{more(missing)} of {what}")
    if extra:
        raise ValueError(f"{where}: unexpected key {extra[0]!r}{more(extra)}, which {what} does not have")


def widths_of(supernet: Supernet, weights: Mapping[str, Any], *, where: str, what: str, hint: str = ""
              ) -> dict[str, int]:
    """The count of every slimmable unit in ``weights``: the output dimension of the unit's first producer.

    A unit whose producer's weight is absent or not a tensor keeps its maximum (:func:`load_weights` names it).

    Raises:
        ValueError: naming the key, for a count above the unit's maximum (``hint`` says what to do), below 1, or not
            a multiple of the unit's group width.
    """
    widths = {}
    for unit in supernet.slimmable_units:
        count = unit.maximum
        key = f"{unit.producers[0]}.weight" if unit.producers else None
        value = weights.get(key) if key is not None else None
        if isinstance(value, Tensor) and value.ndim >= 1:
            count = int(value.shape[0])
            if count > unit.maximum:
                raise ValueError(f"{where}: {key!r} has {count} output channels, more than the {unit.maximum} of unit "
                                 f"{unit.name!r} in {what}{'; ' + hint if hint else ''}")
            if count < 1 or count % unit.multiple:
                raise ValueError(f"{where}: {key!r} has {count} output channels; unit {unit.name!r} of {what} needs a "
                                 f"positive multiple of {unit.multiple}")
        widths[unit.name] = count
    return widths


def fitting_width(supernet: Supernet, widths: Mapping[str, int], *, resolution: float = 0.01) -> float | None:
    """The widest uniform width of ``supernet``'s family whose network fits inside ``widths`` (every unit at most its
    count), on a grid of ``resolution``; of the widths giving that same network, the roundest (1.0 before 1.04).

    Returns None when even the narrowest width does not fit.
    """
    steps = int(round(supernet.width_mult / resolution))
    family = supernet.family_widths()

    def fits(i: int) -> bool:
        return all(count <= widths[name] for name, count in family(i * resolution).items())

    low = last_accepted(fits, steps)  # counts grow with the width
    if low is None:
        return None
    widest = family(low * resolution)
    for block in (100, 50, 25, 10, 5):  # in grid steps: 1.0, 0.5, 0.25, 0.1, 0.05 at the default resolution
        candidate = low // block * block
        if candidate >= 1 and family(candidate * resolution) == widest:
            return round(candidate * resolution, 6)
    return round(low * resolution, 6)


def narrow(supernet: Supernet, widths: Mapping[str, int], *, groups: int, divisor: int, min_ratio: float) -> Supernet:
    """A supernet whose maximum is ``supernet`` at ``widths``, its choices made by the same rules.

    Its weights are ``supernet``'s, sliced; its uniform configs are ``supernet``'s family's networks, up to the widest
    that fits (:func:`fitting_width`; where none fits, the narrowest, clipped to the maxima).

    Args:
        supernet: the space's supernet; it is left as it was.
        widths: a count for every slimmable unit, each at most its maximum.
        groups, divisor, min_ratio: the space's channel-choice rules (:func:`~autoslim.network.supernet.convert`).
    """
    widths = supernet.validate_config(widths)
    width = fitting_width(supernet, widths)
    return convert(materialize(supernet, widths), in_channels=supernet.in_channels, input_size=supernet.input_size,
                   groups=groups, divisor=divisor, min_ratio=min_ratio, width_mult=width if width is not None else 0.01,
                   uniform=supernet.family_widths())


def load_weights(supernet: Supernet, weights: Mapping[str, Any], *, where: str, what: str) -> None:
    """Load ``weights`` (a state dict of the plain network) into ``supernet``, after checking every key and shape.

    Raises:
        ValueError: naming the first key of the network that is missing, of another shape or not a tensor, else the
            first extra key.
    """
    expected = supernet.model.state_dict()
    check_keys(expected, weights, where=where, what=what)
    complete = {}
    for key, tensor in expected.items():
        value = weights.get(key, tensor if key.endswith(_OPTIONAL) else None)
        if not isinstance(value, Tensor):
            raise ValueError(f"{where}: {key!r} is a {type(value).__name__}, not a tensor")
        if value.shape != tensor.shape:
            raise ValueError(f"{where}: {key!r} has shape {_shape(value)}, but {what} needs {_shape(tensor)}")
        complete[key] = value
    supernet.model.load_state_dict(complete)
