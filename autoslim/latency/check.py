"""Checking a latency model on the device: predicted against measured latency of whole networks it has not seen.

:func:`check_model` draws random configs that are not among the model's fit networks, times their static networks
whole (with the full network beside them, for the device's drift since the model), and compares them with the
predictions: Spearman's rank correlation and the relative errors. ``autoslim latency RUN --check N`` prints it.
A check is a sample of timings too: where the networks span little (at batch 1, or on a narrow space) a second
timing of them ranks them no better (``benchmarks/latency_retest.py`` measures how well timings repeat).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..network.supernet import Supernet
from .build import random_configs
from .compare import measure_configs
from .model import Drift, LatencyModel
from .timing import Timer

__all__ = ["ranks", "spearman", "ModelCheck", "check_model"]


def ranks(values: Sequence[float]) -> list[float]:
    """Average ranks from 0 (ties share the mean of their ranks)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2
        i = j + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (Pearson's of their average ranks; NaN when either is
    constant)."""
    import numpy as np

    ra, rb = np.asarray(ranks(a)), np.asarray(ranks(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class ModelCheck:
    """Predicted and measured milliseconds of networks a latency model has not seen, and the device's drift."""

    configs: list[dict[str, int]]
    predicted_ms: list[float]
    measured_ms: list[float]
    drift: Optional[Drift]

    @property
    def errors(self) -> list[float]:
        """Absolute relative errors, ``|predicted / measured - 1|``."""
        return [abs(p / m - 1) for p, m in zip(self.predicted_ms, self.measured_ms)]

    @property
    def spearman(self) -> float:
        return spearman(self.predicted_ms, self.measured_ms)

    @property
    def median_error(self) -> float:
        return statistics.median(self.errors)

    @property
    def p90_error(self) -> float:
        errors = sorted(self.errors)
        return errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))]

    def to_dict(self) -> dict[str, Any]:
        return {"spearman": self.spearman, "median_error": self.median_error, "p90_error": self.p90_error,
                "drift": None if self.drift is None else self.drift.to_dict(),
                "networks": [{"config": c, "predicted_ms": p, "measured_ms": m}
                             for c, p, m in zip(self.configs, self.predicted_ms, self.measured_ms)]}


def check_model(model: LatencyModel, supernet: Supernet, timer: Timer, count: int = 30, *, seed: int = 1
                ) -> ModelCheck:
    """Time ``count`` random configs the model was not fitted on (drawn as its fit draws them, from ``seed``), and
    the full network beside them, with ``timer``, and set them against the model's predictions.

    Raises:
        ValueError: fewer than 3 configs asked for or left to draw, or the model describes another architecture.
    """
    if count < 3:
        raise ValueError(f"a check needs at least 3 networks, got {count}")
    predict = model.bind(supernet)
    configs = random_configs(supernet, count, seed=seed, exclude=[n["config"] for n in model.networks])
    if len(configs) < 3:
        raise ValueError(f"the space has {len(configs)} networks besides the model's fit networks: too few to check")
    *measured, full = measure_configs(supernet, configs + [supernet.largest_config()], timer)
    return ModelCheck(configs, [predict(c) for c in configs], measured, model.drift(full))
