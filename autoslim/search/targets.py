"""Budgets of a search: a MAC or parameter count, or a latency in milliseconds, that a trajectory point must meet.

:func:`parse_targets` reads them from the command line's ``--flops`` / ``--params`` / ``--latency`` values, :func:`check_targets`
refuses those outside the space's range, :func:`stop_limits` tells the search where it may stop and :func:`pick`
takes the first trajectory point that meets a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

from ..budget import format_count, format_ms, parse_budget, parse_latency
from .greedy import Step

__all__ = ["TARGET_KINDS", "Target", "Limits", "parse_targets", "stop_limits", "check_targets", "pick"]

TARGET_KINDS = ("flops", "params", "latency")


@dataclass(frozen=True)
class Target:
    """A budget: at most ``value`` MACs (``kind='flops'``), parameters (``kind='params'``) or milliseconds of
    predicted latency (``kind='latency'``, on the device of the search's latency model)."""

    kind: str
    value: Union[int, float]

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}: use one of {', '.join(TARGET_KINDS)}")
        if not self.value > 0:
            raise ValueError(f"target {self.kind} {self.value} must be positive")

    @property
    def label(self) -> str:
        """A name for files, e.g. ``flops-300M``, ``params-2.5M`` or ``latency-3ms``."""
        if self.kind == "latency":
            return f"latency-{f'{self.value:.6f}'.rstrip('0').rstrip('.')}ms"
        return f"{self.kind}-{_compact(self.value)}"

    def cost(self, macs: int, params: int, latency_ms: Optional[float] = None) -> float:
        """The part of a cost this target limits.

        Raises:
            ValueError: a latency target and no latency.
        """
        if self.kind == "latency":
            if latency_ms is None:
                raise ValueError(f"target {self.label} needs the latency of each trajectory point, and this trajectory "
                                 "records none: search with --latency")
            return latency_ms
        return macs if self.kind == "flops" else params

    def met_by(self, macs: int, params: int, latency_ms: Optional[float] = None) -> bool:
        """Whether a config of this cost is within the target."""
        return self.cost(macs, params, latency_ms) <= self.value

    def format(self, value: float) -> str:
        """A value of this target's kind for messages: ``300.00M`` or ``2.500 ms``."""
        return format_ms(value) if self.kind == "latency" else format_count(value)


class Limits(NamedTuple):
    """Where a search may stop: at or under every limit given (None: no limit of that kind)."""

    macs: Optional[int] = None
    params: Optional[int] = None
    latency: Optional[float] = None


def parse_targets(flops: Sequence[str] = (), params: Sequence[str] = (), latency: Sequence[str] = ()) -> list[Target]:
    """Targets from command-line budgets such as ``300M`` (MACs), ``2M`` (parameters) and ``3ms`` (latency).

    Duplicates are dropped; the order given is kept, MAC targets first, then parameters, then latency.

    Raises:
        ValueError: if a budget cannot be read (see :func:`autoslim.budget.parse_budget`,
            :func:`autoslim.budget.parse_latency`).
    """
    targets: list[Target] = []
    for kind, texts in (("flops", flops), ("params", params), ("latency", latency)):
        for text in texts:
            target = Target(kind, parse_latency(text) if kind == "latency" else parse_budget(text))
            if target not in targets:
                targets.append(target)
    return targets


def stop_limits(targets: Sequence[Target]) -> Limits:
    """The limits of :func:`greedy_search` (``stop_macs``, ``stop_params``, ``stop_latency``) that reach every
    target."""
    found = {kind: [t.value for t in targets if t.kind == kind] for kind in TARGET_KINDS}
    return Limits(*(min(found[kind]) if found[kind] else None for kind in TARGET_KINDS))


def _compact(value: int) -> str:
    """A count with a k/M/G/T suffix and no trailing zeros (``300000000 -> '300M'``, ``2500000 -> '2.5M'``)."""
    for suffix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale:
            return f"{value / scale:.6f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def check_targets(targets: Sequence[Target], *, largest: Sequence[float], smallest: Sequence[float]) -> None:
    """Check that the search can reach every target and that none is met before it starts.

    Args:
        targets: the targets.
        largest: ``(macs, params)`` of the largest config, with its predicted latency third when a target is one.
        smallest: the same of the smallest config.

    Raises:
        ValueError: naming the first target out of reach, with the reachable range.
    """
    for target in targets:
        low, high = target.cost(*smallest), target.cost(*largest)
        reachable = f"reachable {target.kind}: {target.format(low)} to {target.format(high)}"
        if target.value < low:
            raise ValueError(f"target {target.label} is below the smallest config ({target.format(low)} "
                             f"{target.kind}); {reachable}: choose a target in that range or widen the space")
        if target.value >= high:
            raise ValueError(f"target {target.label} is already met by the largest config "
                             f"({target.format(high)} {target.kind}); {reachable}: choose a target below "
                             f"{target.format(high)}")


def pick(trajectory: Sequence[Step], target: Target) -> Step:
    """The first trajectory point that meets ``target``.

    Raises:
        ValueError: if no point meets it (the search stopped before reaching it), or a latency target on a
            trajectory that records no latency.
    """
    for step in trajectory:
        if target.met_by(step.macs, step.params, step.latency_ms):
            return step
    reached = min((target.cost(s.macs, s.params, s.latency_ms) for s in trajectory), default=None)
    where = (f"the trajectory reaches {target.format(reached)} {target.kind}" if reached is not None
             else "the trajectory is empty")
    raise ValueError(f"no point of the trajectory meets target {target.label} ({where}): "
                     "resume the search with this target so that it runs further")
