"""Measuring a :class:`~autoslim.latency.model.LatencyModel`: every layer call timed alone over its counts, then a
non-negative fit of the model's terms on whole networks timed as the user runs them (see :mod:`autoslim.latency.model`).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from ..network.supernet import Supernet
from .model import FEATURES, LatencyModel, LayerTable, Progress, feature_function, supernet_fingerprint
from .timing import Timer

__all__ = ["build_latency_model", "fit_configs", "random_configs"]

_MAX_GRID = 16  # counts measured per input of a layer that reads a concatenation


# -- the layer calls that are timed ------------------------------------------------------------------


@dataclass
class _Site:
    """One timed layer call: its grid of counts, and how to make the plain layer and its input at given counts."""

    call: int
    module: nn.Module
    name: str
    kind: str
    inputs: list[int]
    outputs: list[int]
    shape: tuple[int, ...]  # the input at full width, batch 1
    channel_dim: int

    def layer(self, n_in: int, n_out: int) -> nn.Module:
        m = self.module
        if self.kind == "linear":
            return nn.Linear(n_in, n_out, m.bias is not None)
        if self.kind == "dwconv":
            groups, n_out = n_in // (m.in_channels // m.groups), n_in
        else:
            groups = m.groups
        return nn.Conv2d(n_in, n_out, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None,
                         m.padding_mode)

    def input_shape(self, n_in: int, batch: int) -> tuple[int, ...]:
        shape = list(self.shape)
        shape[0], shape[self.channel_dim] = batch, n_in
        return tuple(shape)

    def signature(self, n_in: int, n_out: int, batch: int) -> str:
        """Calls of equal signature take the same time: the layer's type, geometry and input shape."""
        layer = self.layer(n_in, n_out)
        return f"{layer!r}@{self.input_shape(n_in, batch)}"


def _sites(supernet: Supernet) -> list[_Site]:
    from ..network.fx_graph import node_shape, propagate_shapes, tensor_args

    trace = supernet.trace
    propagate_shapes(trace.graph_module, trace.in_channels, trace.input_size)  # shapes at the traced input size
    nodes = {node.name: node for node in trace.graph_module.graph.nodes}
    sites = []
    for i, call in enumerate(trace.calls):
        module = trace.modules.get(call.module)
        if call.train_only or call.kind not in ("conv", "dwconv", "linear") or call.node not in nodes:
            continue  # a conv along the channels (ECA's "chconv") is not timed: its few MACs are in the MACs term
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        arguments = tensor_args(nodes[call.node])
        shape = node_shape(arguments[0]) if arguments else None
        if shape is None:
            continue
        channel_dim = len(shape) - 1 if call.kind == "linear" else 1
        outputs = [] if call.kind == "dwconv" else list(supernet.units[call.out_unit].choices)
        sites.append(_Site(i, module, call.module, call.kind, _input_counts(supernet, call.inputs), outputs,
                           tuple(int(s) for s in shape), channel_dim))
    return sites


def _input_counts(supernet: Supernet, inputs: Sequence[tuple[int, int]]) -> list[int]:
    """The input counts a call can see: the sums over its input's parts, thinned to at most ``_MAX_GRID`` values."""
    sums = {0}
    for unit, scale in inputs:
        sums = {total + count * scale for total in sums for count in supernet.units[unit].choices}
    values = sorted(sums)
    if len(values) > _MAX_GRID:
        values = sorted({values[round(k * (len(values) - 1) / (_MAX_GRID - 1))] for k in range(_MAX_GRID)})
    return values


# -- building a model ---------------------------------------------------------------------------------


def fit_configs(supernet: Supernet, count: int, *, seed: int = 0) -> list[dict[str, int]]:
    """The configs whose whole networks the fit times: the largest, the smallest, then :func:`random_configs`."""
    extremes = [supernet.largest_config(), supernet.smallest_config()]
    return (extremes + random_configs(supernet, count - 2, seed=seed, exclude=extremes, attempts=20 * count))[:count]


def random_configs(supernet: Supernet, count: int, *, seed: int, exclude: Sequence[Mapping[str, int]] = (),
                   attempts: Optional[int] = None) -> list[dict[str, int]]:
    """``count`` distinct random configs not in ``exclude``, alternately drawn around a random overall width and
    uniformly per unit (as ``sample_config``), so that they cover narrow and wide networks, not only the middle
    where independent draws gather. Fewer where the space has fewer (after ``attempts`` draws, default 20 per
    config)."""
    rng = random.Random(seed)
    configs: list[dict[str, int]] = []
    units = supernet.slimmable_units
    for attempt in range(20 * count if attempts is None else attempts):
        if len(configs) >= count:
            break
        if attempt % 2:
            config = supernet.sample_config(rng)
        else:
            level = rng.random()
            config = {}
            for unit in units:
                last = len(unit.choices) - 1
                index = round(level * last + rng.gauss(0, 0.2 * last))
                config[unit.name] = unit.choices[min(last, max(0, index))]
        if config not in configs and config not in exclude:
            configs.append(config)
    return configs


def build_latency_model(supernet: Supernet, timer: Timer, *, networks: int = 24, seed: int = 0,
                        on_progress: Optional[Progress] = None) -> LatencyModel:
    """Measure the latency model of ``supernet`` with ``timer`` (see the module docstring).

    Args:
        supernet: the supernet; its config is left as it was.
        timer: what measures (:func:`~autoslim.latency.timing.make_timer`; tests give a fake one).
        networks: whole networks timed for the fit (at least 3).
        seed: draws the random configs of the fit.
        on_progress: called after every measurement.

    Raises:
        ValueError: fewer than 3 networks.
    """
    from ..network.static import materialize
    from .timing import device_description

    if networks < 3:
        raise ValueError(f"a latency model needs at least 3 whole networks to fit, got {networks}")
    began = time.perf_counter()
    key = timer.key
    sites = _sites(supernet)
    configs = fit_configs(supernet, networks, seed=seed)
    grid = {}  # signature -> (site, n_in, n_out), in order of first use
    cells = []  # per site: the signature of every (input, output) cell
    for site in sites:
        rows = []
        for n_in in site.inputs:
            rows.append([site.signature(n_in, n_out, key.batch) for n_out in (site.outputs or [n_in])])
            for n_out, signature in zip(site.outputs or [n_in], rows[-1]):
                grid.setdefault(signature, (site, n_in, n_out))
        cells.append(rows)
    total = len(grid) + len(configs)
    calls = [(site.layer(n_in, n_out), site.input_shape(n_in, key.batch)) for site, n_in, n_out in grid.values()]

    def layers_timed(done: int, _: int) -> None:
        if on_progress:
            on_progress(done, total, f"layers ({len(grid)} calls, interleaved rounds)")

    timed = dict(zip(grid, timer.layers(calls, layers_timed)))
    layers = [LayerTable(site.call, site.name, site.kind, list(site.inputs), list(site.outputs),
                         [[timed[s] for s in row] for row in rows]) for site, rows in zip(sites, cells)]
    model = LatencyModel(key=key, description=device_description(key), fingerprint=supernet_fingerprint(supernet),
                         layers=layers, coefficients={"lookup": 1.0, "activations": 0.0, "macs": 0.0, "intercept": 0.0},
                         timing=_timing_of(timer))
    features = feature_function(model, supernet)
    shape = (key.batch, supernet.in_channels, supernet.input_size, supernet.input_size)

    def networks_timed(done: int, of: int) -> None:
        if on_progress:
            on_progress(len(grid) + round(done / of * len(configs)), total,
                        f"{len(configs)} networks, interleaved rounds")

    measured = timer.networks([materialize(supernet, config) for config in configs], shape, networks_timed)
    rows = [features(config) for config in configs]
    coefficients, kept = _robust_fit(rows, measured)
    model.coefficients = dict(zip(FEATURES, coefficients))
    predict = model.bind(supernet)
    model.networks = [{"config": config, "measured_ms": ms, "predicted_ms": predict(config),
                       **({} if keep else {"outlier": True})} for config, ms, keep in zip(configs, measured, kept)]
    model.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model.seconds = time.perf_counter() - began
    return model


def _timing_of(timer: Timer) -> dict[str, Any]:
    settings = getattr(timer, "settings", None)
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else {}


def _robust_fit(rows: Sequence[Sequence[float]], measured: Sequence[float]) -> tuple[tuple[float, ...], list[bool]]:
    """:func:`_fit`, then again without the networks whose relative error is far out of line with the others (a
    timing that other work on the machine interrupted): more than 5 median absolute deviations and 5% from the
    median error. At most a quarter of the networks are left out. Returns the coefficients and which networks
    were kept."""
    coefficients = _fit(rows, measured)
    errors = [(sum(c * f for c, f in zip(coefficients, row)) + coefficients[-1]) / m - 1
              for row, m in zip(rows, measured)]
    middle = statistics.median(errors)
    spread = statistics.median(abs(e - middle) for e in errors)
    far = sorted(range(len(errors)), key=lambda i: -abs(errors[i] - middle))[: len(errors) // 4]
    out = {i for i in far if abs(errors[i] - middle) > max(5 * spread, 0.05)}
    kept = [i not in out for i in range(len(errors))]
    if out:
        coefficients = _fit([r for r, k in zip(rows, kept) if k], [m for m, k in zip(measured, kept) if k])
    return coefficients, kept


def _fit(rows: Sequence[Sequence[float]], measured: Sequence[float]) -> tuple[float, ...]:
    """Non-negative coefficients of the features in ``rows`` and an intercept (last), minimising the squared relative
    error of their sum.

    Every subset of the terms is solved by least squares; of the solutions with no negative coefficient the one
    with the smallest error is kept (with so few terms, the non-negative least-squares solution).
    """
    import numpy as np

    y = np.asarray(measured, dtype=float)
    weights = 1.0 / np.maximum(y, 1e-12)
    design = np.column_stack([np.asarray(rows, dtype=float), np.ones(len(y))]) * weights[:, None]
    target = y * weights
    terms = design.shape[1]
    best, best_error = (0.0,) * (terms - 1) + (float(np.mean(y)),), np.inf
    for size in range(1, terms + 1):
        for columns in itertools.combinations(range(terms), size):
            solution, *_ = np.linalg.lstsq(design[:, columns], target, rcond=None)
            if (solution < 0).any():
                continue
            coefficients = np.zeros(terms)
            coefficients[list(columns)] = solution
            error = float(np.sum((design @ coefficients - target) ** 2))
            if error < best_error - 1e-15:
                best, best_error = tuple(float(v) for v in coefficients), error
    return best
