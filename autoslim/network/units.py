"""Channel units and their choices (AutoSlim section 3.3: each layer's channels in ``groups`` groups).

A channel unit is a set of channels that must have the same count everywhere it appears: the output of
a conv, the BatchNorm after it, every layer that reads it and, across a residual addition, all the tensors
added together. Channels are always a prefix: a layer at ``k`` channels uses its first ``k`` filters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["make_divisible", "unit_choices", "ChannelUnit"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going more than 10% below it.

    This is the rule torchvision (and the MobileNet papers) use to scale channel counts by a width
    multiplier, so ``make_divisible(c * w)`` reproduces the networks known by width ``w``.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def unit_choices(maximum: int, *, groups: int = 10, divisor: int = 8, min_ratio: float = 0.0) -> tuple[int, ...]:
    """The allowed counts of a unit of ``maximum`` channels, in increasing order.

    The maximum is split into ``groups`` equal groups; each count ``maximum * i / groups`` is rounded with
    :func:`make_divisible` (capped at the maximum), duplicates are removed, and counts below
    ``min_ratio * maximum`` are dropped. The maximum itself is always a choice.
    """
    if maximum < 1:
        raise ValueError(f"a unit needs at least one channel, got {maximum}")
    if groups < 1 or divisor < 1:
        raise ValueError(f"groups and divisor must be positive, got groups={groups}, divisor={divisor}")
    counts = {maximum}
    for i in range(1, groups + 1):
        count = min(maximum, make_divisible(maximum * i / groups, divisor, min_value=min(divisor, maximum)))
        if count >= min_ratio * maximum:
            counts.add(count)
    return tuple(sorted(counts))


@dataclass
class ChannelUnit:
    """A set of channels sliced together.

    Attributes:
        name: the qualified name of its first producing module (stable across widths).
        maximum: the channel count of the supernet.
        choices: the allowed counts, increasing; ``(maximum,)`` for a frozen unit.
        frozen: why the unit cannot be slimmed, or ``None`` if it can.
        producers: modules whose output channels are this unit.
        consumers: modules whose input channels are this unit.
        carriers: modules that pass it through (BatchNorm, depthwise and other grouped convs with as many
            outputs as inputs).
        multiple: every count must be a multiple of this (a grouped conv's group width; 1 otherwise).
    """

    name: str
    maximum: int
    choices: tuple[int, ...] = ()
    frozen: str | None = None
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    carriers: list[str] = field(default_factory=list)
    multiple: int = 1

    @property
    def slimmable(self) -> bool:
        return self.frozen is None and len(self.choices) > 1

    @property
    def modules(self) -> list[str]:
        """Every module the unit spans, in first-seen order."""
        seen: dict[str, None] = {}
        for name in self.producers + self.carriers + self.consumers:
            seen.setdefault(name)
        return list(seen)
