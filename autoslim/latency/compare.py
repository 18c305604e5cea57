"""Measured latency of a config beside the uniform-width networks it should beat.

:func:`measure_config` times one config's static network as a whole (:func:`measure_configs` several, in interleaved
rounds); :func:`compare_latency` times it with the widest uniform network within the same latency, the uniform
network of equal MACs and the full network, all together, so that ``autoslim cost --latency`` and ``export-config
--latency`` can say honestly whether the searched network is faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from ..network.supernet import Supernet, uniform_within, widest_uniform
from .timing import Timer

__all__ = ["measure_config", "measure_configs", "Measured", "LatencyComparison", "compare_latency"]


def measure_configs(supernet: Supernet, configs: Sequence[Mapping[str, int]], timer: Timer) -> list[float]:
    """Milliseconds of each config's static network, exported and timed whole by ``timer``, in interleaved rounds."""
    from ..network.static import materialize

    key = timer.key
    shape = (key.batch, supernet.in_channels, supernet.input_size, supernet.input_size)
    return timer.networks([materialize(supernet, supernet.validate_config(config)) for config in configs], shape)


def measure_config(supernet: Supernet, config: Mapping[str, int], timer: Timer) -> float:
    """Milliseconds of ``config``'s static network, exported and timed whole by ``timer``."""
    return measure_configs(supernet, [config], timer)[0]


@dataclass(frozen=True)
class Measured:
    """One network of a comparison: its name (``searched``, ``uniform 0.62x``, ``full``), cost and measured ms."""

    name: str
    macs: int
    params: int
    measured_ms: float
    width: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "macs": self.macs, "params": self.params,
                "measured_ms": self.measured_ms}


@dataclass(frozen=True)
class LatencyComparison:
    """A config's measured latency beside the uniform networks and the full network.

    Attributes:
        searched: the config.
        budget_ms: the latency the uniform network had to fit (the target, or the config's measured latency).
        uniform_within: the widest uniform network measured within ``budget_ms`` (None if none is).
        uniform_equal_macs: the widest uniform network of no more MACs than the config (None if none is).
        full: the largest config.
    """

    searched: Measured
    budget_ms: float
    uniform_within: Optional[Measured]
    uniform_equal_macs: Optional[Measured]
    full: Measured

    @property
    def warning(self) -> Optional[str]:
        """One line when the searched network is not faster than the uniform network of equal MACs."""
        uniform = self.uniform_equal_macs
        if uniform is None or self.searched.measured_ms < uniform.measured_ms:
            return None
        return (f"the searched network ({self.searched.measured_ms:.3f} ms) is not faster than the uniform "
                f"{uniform.width:g}x network of no more MACs ({uniform.measured_ms:.3f} ms, "
                f"{uniform.macs:,} MACs against {self.searched.macs:,})")

    def rows(self) -> list[Measured]:
        return [m for m in (self.searched, self.uniform_within, self.uniform_equal_macs, self.full) if m is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"budget_ms": self.budget_ms, "searched": self.searched.to_dict(),
                "uniform_within": self.uniform_within.to_dict() if self.uniform_within else None,
                "uniform_equal_macs": self.uniform_equal_macs.to_dict() if self.uniform_equal_macs else None,
                "full": self.full.to_dict(), "warning": self.warning}


def compare_latency(supernet: Supernet, config: Mapping[str, int], timer: Timer, *, budget_ms: Optional[float] = None,
                    predict: Optional[Callable[[Mapping[str, int]], float]] = None, name: str = "searched",
                    uniform: bool = True) -> LatencyComparison:
    """Measure ``config`` beside the uniform networks and the full network.

    The widest uniform network within ``budget_ms`` (default: the config's measured latency) is found by bisecting
    the uniform widths on ``predict`` when a latency model is given, else on measurements; then every network of the
    comparison is timed together, in interleaved rounds, and those timings are the ones reported.

    Args:
        supernet: the supernet of the config.
        config: the channel config.
        timer: what measures.
        budget_ms: the latency the uniform network must fit.
        predict: a latency model's predictor (:meth:`~autoslim.latency.model.LatencyModel.bind`).
        name: the config's name in the rows.
        uniform: compare with the uniform networks (False: with the full network only, for a uniform config).
    """
    looked: dict[tuple, float] = {}

    def look(candidate: Mapping[str, int]) -> float:  # to find the uniform network within the budget
        key = tuple(sorted(candidate.items()))
        if key not in looked:
            looked[key] = measure_config(supernet, candidate, timer)
        return looked[key]

    budget = look(config) if budget_ms is None else budget_ms
    latency = predict if predict is not None else look
    rows: list[Optional[tuple[str, Mapping[str, int], Optional[float]]]] = [(name, config, None)]
    if uniform:
        found = widest_uniform(supernet, lambda candidate: latency(candidate) <= budget)
        rows.append((f"uniform {found[0]:g}x (widest within {budget:.3f} ms)", found[1], found[0]) if found else None)
        found = uniform_within(supernet, macs=supernet.cost(config).macs)
        rows.append((f"uniform {found[0]:g}x (widest within its MACs)", found[1], found[0]) if found else None)
    else:
        rows += [None, None]
    rows.append(("full network", supernet.largest_config(), supernet.width_mult))
    timings = iter(measure_configs(supernet, [row[1] for row in rows if row is not None], timer))

    def measured(row: Optional[tuple[str, Mapping[str, int], Optional[float]]]) -> Optional[Measured]:
        if row is None:
            return None
        label, candidate, width = row
        cost = supernet.cost(candidate)
        return Measured(label, cost.macs, cost.params, next(timings), width)

    searched, within, equal, full = [measured(row) for row in rows]  # in order: the timings are consumed in turn
    return LatencyComparison(searched, budget, within, equal, full)
