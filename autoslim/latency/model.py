"""A latency model of a supernet on one device and runtime: what any channel config's static network takes to run.

Two measurements, combined (the per-layer lookup tables of ProxylessNAS and Once-for-All, corrected on whole
networks because isolated layers miss what happens between them):

1. **A lookup of every layer call.** Each conv and linear call is timed alone, as a plain layer, at every input
   and output count it can take (its units' choices; a layer reading a concatenation at up to 16 of the sums its
   parts can reach), on its own input shape, less the cost of calling the runtime at all (a call that does nothing
   on the same input), so that the table holds what the layer adds inside a network. Calls of the same shape share
   one timing. Between measured counts the table is interpolated bilinearly.
2. **A fit on whole networks.** ``networks`` static networks (the largest, the smallest, random configs, half of them
   drawn around a random overall width so that narrow and wide networks are both covered) are exported as the user
   runs them and timed whole. Their latency is fitted as ``a * lookup + b * activations + m * MACs + c``: ``lookup``
   is the sum of the layer timings, ``activations`` the elements (millions per image) that every layer call writes,
   which prices BatchNorm, activations, additions and memory traffic, ``MACs`` (millions per image) what the lookup
   misses in proportion to the arithmetic (and all of it where single layers are too small to time), and ``c`` the
   fixed cost of the network (pooling, the runtime's overhead per call). The coefficients are not negative; each network counts by its relative error,
   and a network whose timing is far out of line with the others (interrupted by other work) is left out.

:meth:`LatencyModel.bind` gives a predictor of milliseconds per config (pure arithmetic, as the cost model), which
the search calls for every candidate. The model is a plain dict on disk (:mod:`autoslim.latency.cache`).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from torch import nn

from ..network.supernet import Supernet
from ..network.trace_records import input_count
from .timing import LatencyKey, Timer

__all__ = ["FORMAT", "LayerTable", "LatencyModel", "build_latency_model", "fit_configs", "supernet_fingerprint",
           "Progress"]

FORMAT = "autoslim-latency/1"
_MAX_GRID = 16  # counts measured per input of a layer that reads a concatenation
_FEATURES = ("lookup", "activations", "macs", "intercept")

Progress = Callable[[int, int, str], None]
"""``on_progress(done, total, what)``: called as the measurements of a model are made."""


@dataclass
class LayerTable:
    """The measured milliseconds of one layer call over its input and output counts.

    Attributes:
        call: the index of the call in ``supernet.trace.calls``.
        module: its module's name.
        kind: ``conv``, ``dwconv`` (input and output counts equal: ``outputs`` is empty) or ``linear``.
        inputs: the input counts measured, increasing.
        outputs: the output counts measured, increasing.
        ms: ``ms[i][j]`` at ``inputs[i]`` and ``outputs[j]`` (``ms[i][0]`` for a depthwise conv).
    """

    call: int
    module: str
    kind: str
    inputs: list[int]
    outputs: list[int]
    ms: list[list[float]]

    def at(self, n_in: int, n_out: int) -> float:
        """The milliseconds at ``(n_in, n_out)``: measured, or bilinearly interpolated (clamped at the ends)."""
        i, s = _bracket(self.inputs, n_in)
        if not self.outputs:
            return (1 - s) * self.ms[i][0] + s * self.ms[i + 1 if s else i][0]
        j, t = _bracket(self.outputs, n_out)
        i2, j2 = (i + 1 if s else i), (j + 1 if t else j)
        return ((1 - s) * ((1 - t) * self.ms[i][j] + t * self.ms[i][j2])
                + s * ((1 - t) * self.ms[i2][j] + t * self.ms[i2][j2]))


def _bracket(grid: Sequence[int], value: int) -> tuple[int, float]:
    """``(i, s)``: ``value`` lies ``s`` of the way from ``grid[i]`` to ``grid[i + 1]`` (``s = 0``: at ``grid[i]``)."""
    if value <= grid[0]:
        return 0, 0.0
    if value >= grid[-1]:
        return len(grid) - 1, 0.0
    i = bisect.bisect_right(grid, value) - 1
    if grid[i] == value:
        return i, 0.0
    return i, (value - grid[i]) / (grid[i + 1] - grid[i])


@dataclass
class LatencyModel:
    """A supernet's latency on one :class:`~autoslim.latency.timing.LatencyKey` (see the module docstring).

    Attributes:
        key: device, runtime, batch and threads.
        description: the machine it was measured on (:func:`~autoslim.latency.timing.device_description`).
        fingerprint: the supernet architecture it describes (:func:`supernet_fingerprint`).
        layers: one table per timed layer call.
        coefficients: ``lookup``, ``activations`` (ms per million elements per image), ``macs`` (ms per million MACs
            per image) and ``intercept`` (ms).
        networks: the whole networks of the fit: ``config``, ``measured_ms``, ``predicted_ms`` (and ``outlier``: True
            for one left out of the fit).
        timing: how timings were taken (warm-up, repeats, block length).
        created: when it was measured (ISO 8601, UTC).
        seconds: how long measuring it took.
    """

    key: LatencyKey
    description: dict[str, Any]
    fingerprint: str
    layers: list[LayerTable]
    coefficients: dict[str, float]
    networks: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0

    @property
    def identity(self) -> str:
        """Names this measurement: the key's label and a digest of the fitted model (``cpu-torch-b1-t1@3f2a...``)."""
        digest = hashlib.sha256(json.dumps([self.fingerprint, self.coefficients, self.created],
                                           sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.key.label}@{digest}"

    def bind(self, supernet: Supernet) -> Callable[[Mapping[str, int]], float]:
        """The predictor ``config -> milliseconds`` of this model on ``supernet`` (validated configs; units a config
        does not name stay at their maximum).

        Raises:
            ValueError: the model was measured on another architecture.
        """
        found = supernet_fingerprint(supernet)
        if found != self.fingerprint:
            raise ValueError(f"this latency model was measured on another architecture (fingerprint "
                             f"{self.fingerprint}, the supernet's is {found}): measure it again")
        features = _feature_function(self, supernet)
        *weights, intercept = (self.coefficients[name] for name in _FEATURES)

        def predict(config: Mapping[str, int]) -> float:
            return sum(w * f for w, f in zip(weights, features(config))) + intercept

        return predict

    def predict(self, supernet: Supernet, config: Mapping[str, int]) -> float:
        """Predicted milliseconds of ``config``'s static network (see :meth:`bind` for many configs)."""
        return self.bind(supernet)(config)

    def fit_errors(self) -> list[float]:
        """Relative errors (predicted / measured - 1) on the networks of the fit (not those left out as outliers)."""
        return [n["predicted_ms"] / n["measured_ms"] - 1 for n in self.networks if not n.get("outlier")]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key.to_dict(), "description": dict(self.description),
                "fingerprint": self.fingerprint, "timing": dict(self.timing), "created": self.created,
                "seconds": self.seconds, "coefficients": dict(self.coefficients),
                "layers": [{"call": t.call, "module": t.module, "kind": t.kind, "inputs": t.inputs,
                            "outputs": t.outputs, "ms": t.ms} for t in self.layers],
                "networks": list(self.networks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "latency model") -> LatencyModel:
        """Read :meth:`to_dict`'s form.

        Raises:
            ValueError: another format, or missing or malformed fields (naming ``source``).
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"{source}: not an autoslim latency model (format {found!r}, expected {FORMAT!r})")
        try:
            return cls(key=LatencyKey(**data["key"]), description=dict(data["description"]),
                       fingerprint=str(data["fingerprint"]),
                       layers=[LayerTable(int(t["call"]), str(t["module"]), str(t["kind"]), [int(v) for v in t["inputs"]],
                                          [int(v) for v in t["outputs"]], [[float(v) for v in row] for row in t["ms"]])
                               for t in data["layers"]],
                       coefficients={name: float(data["coefficients"][name]) for name in _FEATURES},
                       networks=list(data.get("networks") or []), timing=dict(data.get("timing") or {}),
                       created=str(data.get("created", "")), seconds=float(data.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: malformed latency model ({type(error).__name__}: {error})") from None


def supernet_fingerprint(supernet: Supernet) -> str:
    """A digest of what a latency model depends on: the units with their choices, the layer calls with their
    shapes, the input size and image channels."""
    trace = supernet.trace
    described = {"units": [[u.name, u.maximum, list(u.choices), u.frozen is None] for u in supernet.units],
                 "calls": [[c.module, c.kind, [list(s) for s in c.inputs], [list(s) for s in c.outputs], c.out_spatial,
                            c.train_only] for c in trace.calls],
                 "input": [trace.in_channels, trace.input_size]}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


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
            continue
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


def _feature_function(model: LatencyModel, supernet: Supernet
                      ) -> Callable[[Mapping[str, int]], tuple[float, float, float]]:
    """``config -> (lookup ms, activations in millions per image, MACs in millions per image)`` on ``supernet``."""
    calls = supernet.trace.calls
    tables = [(table, calls[table.call].inputs, calls[table.call].out_unit) for table in model.layers]
    writers = []  # (inputs, out unit, per-channel output positions, output follows the input)
    for call in calls:
        if call.train_only:
            continue
        follows = call.kind in ("dwconv", "bn", "ln")
        writers.append((call.inputs, call.out_unit, call.out_spatial, follows))

    def features(config: Mapping[str, int]) -> tuple[float, float, float]:
        counts = supernet.unit_counts(config)
        lookup = 0.0
        for table, inputs, out in tables:
            n_in = input_count(inputs, counts)
            lookup += table.at(n_in, n_in if table.kind == "dwconv" else counts[out])
        activations = 0
        for inputs, out, spatial, follows in writers:
            activations += (input_count(inputs, counts) if follows else counts[out]) * spatial
        return lookup, activations / 1e6, supernet.cost(config).macs / 1e6

    return features


# -- building a model ---------------------------------------------------------------------------------


def fit_configs(supernet: Supernet, count: int, *, seed: int = 0) -> list[dict[str, int]]:
    """The configs whose whole networks the fit times: the largest, the smallest, then random configs, alternately
    drawn uniformly per unit (as ``sample_config``) and around a random overall width (so that the fit covers
    narrow and wide networks, not only the middle where independent draws gather)."""
    rng = random.Random(seed)
    configs = [supernet.largest_config(), supernet.smallest_config()]
    units = supernet.slimmable_units
    for attempt in range(20 * count):
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
        if config not in configs:
            configs.append(config)
    return configs[:count]


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
    total, done = len(grid) + len(configs), 0
    timed: dict[str, float] = {}
    for signature, (site, n_in, n_out) in grid.items():
        timed[signature] = timer.layer(site.layer(n_in, n_out), site.input_shape(n_in, key.batch))
        done += 1
        if on_progress:
            on_progress(done, total, f"layer {site.name} {n_in}->{n_out}")
    layers = [LayerTable(site.call, site.name, site.kind, list(site.inputs), list(site.outputs),
                         [[timed[s] for s in row] for row in rows]) for site, rows in zip(sites, cells)]
    model = LatencyModel(key=key, description=device_description(key), fingerprint=supernet_fingerprint(supernet),
                         layers=layers, coefficients={"lookup": 1.0, "activations": 0.0, "macs": 0.0, "intercept": 0.0},
                         timing=_timing_of(timer))
    features = _feature_function(model, supernet)
    shape = (key.batch, supernet.in_channels, supernet.input_size, supernet.input_size)
    rows, measured = [], []
    for config in configs:
        measured.append(timer.network(materialize(supernet, config), shape))
        rows.append(features(config))
        done += 1
        if on_progress:
            on_progress(done, total, f"network {len(measured)} of {len(configs)}")
    coefficients, kept = _robust_fit(rows, measured)
    model.coefficients = dict(zip(_FEATURES, coefficients))
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
