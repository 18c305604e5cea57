"""Budgets of a search: a MAC or parameter count that a trajectory point must meet.

:func:`parse_targets` reads them from the command line's ``--flops`` / ``--params`` values, :func:`check_targets`
refuses those outside the space's range, :func:`stop_limits` tells the search where it may stop and :func:`pick`
takes the first trajectory point that meets a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..budget import format_count, parse_budget
from .greedy import Step

__all__ = ["TARGET_KINDS", "Target", "parse_targets", "stop_limits", "check_targets", "pick"]

TARGET_KINDS = ("flops", "params")


@dataclass(frozen=True)
class Target:
    """A budget: at most ``value`` MACs (``kind='flops'``) or parameters (``kind='params'``)."""

    kind: str
    value: int

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}: use one of {', '.join(TARGET_KINDS)}")
        if self.value <= 0:
            raise ValueError(f"target {self.kind} {self.value} must be positive")

    @property
    def label(self) -> str:
        """A name for files, e.g. ``flops-300M`` or ``params-2.5M``."""
        return f"{self.kind}-{_compact(self.value)}"

    def cost(self, macs: int, params: int) -> int:
        """The part of a cost this target limits."""
        return macs if self.kind == "flops" else params

    def met_by(self, macs: int, params: int) -> bool:
        """Whether a config of this cost is within the target."""
        return self.cost(macs, params) <= self.value


def parse_targets(flops: Sequence[str] = (), params: Sequence[str] = ()) -> list[Target]:
    """Targets from command-line budgets such as ``300M`` (MACs) and ``2M`` (parameters).

    Duplicates are dropped; the order given is kept, MAC targets first.

    Raises:
        ValueError: if a budget cannot be read (see :func:`autoslim.budget.parse_budget`).
    """
    targets: list[Target] = []
    for kind, texts in (("flops", flops), ("params", params)):
        for text in texts:
            target = Target(kind, parse_budget(text))
            if target not in targets:
                targets.append(target)
    return targets


def stop_limits(targets: Sequence[Target]) -> tuple[Optional[int], Optional[int]]:
    """The ``(stop_macs, stop_params)`` of :func:`greedy_search` that reach every target."""
    macs = [t.value for t in targets if t.kind == "flops"]
    params = [t.value for t in targets if t.kind == "params"]
    return (min(macs) if macs else None, min(params) if params else None)


def _compact(value: int) -> str:
    """A count with a k/M/G/T suffix and no trailing zeros (``300000000 -> '300M'``, ``2500000 -> '2.5M'``)."""
    for suffix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale:
            return f"{value / scale:.6f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def check_targets(targets: Sequence[Target], *, largest: tuple[int, int], smallest: tuple[int, int]) -> None:
    """Check that the search can reach every target and that none is met before it starts.

    Args:
        targets: the targets.
        largest: ``(macs, params)`` of the largest config.
        smallest: ``(macs, params)`` of the smallest config.

    Raises:
        ValueError: naming the first target out of reach, with the reachable range.
    """
    for target in targets:
        low, high = target.cost(*smallest), target.cost(*largest)
        reachable = f"reachable {target.kind}: {format_count(low)} to {format_count(high)}"
        if target.value < low:
            raise ValueError(f"target {target.label} is below the smallest config ({format_count(low)} "
                             f"{target.kind}); {reachable}: choose a target in that range or widen the space")
        if target.value >= high:
            raise ValueError(f"target {target.label} is already met by the largest config "
                             f"({format_count(high)} {target.kind}); {reachable}: choose a target below "
                             f"{format_count(high)}")


def pick(trajectory: Sequence[Step], target: Target) -> Step:
    """The first trajectory point that meets ``target``.

    Raises:
        ValueError: if no point meets it (the search stopped before reaching it).
    """
    for step in trajectory:
        if target.met_by(step.macs, step.params):
            return step
    reached = min((target.cost(s.macs, s.params) for s in trajectory), default=None)
    where = f"the trajectory reaches {format_count(reached)} {target.kind}" if reached is not None else "the trajectory is empty"
    raise ValueError(f"no point of the trajectory meets target {target.label} ({where}): "
                     "resume the search with this target so that it runs further")


