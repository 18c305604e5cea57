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
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..network.supernet import Supernet
from ..network.trace_records import input_count
from .timing import LatencyKey

__all__ = ["FORMAT", "FEATURES", "DRIFT_TOLERANCE", "LayerTable", "LatencyModel", "Drift", "supernet_fingerprint",
           "feature_function", "Progress"]

FORMAT = "autoslim-latency/1"
FEATURES = ("lookup", "activations", "macs", "intercept")

DRIFT_TOLERANCE = 0.10
"""How far the full network's latency may move from the model's before :class:`Drift` warns (a fraction)."""

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
        timing: how timings were taken (warm-up, repeats, block length, rounds).
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
        features = feature_function(self, supernet)
        *weights, intercept = (self.coefficients[name] for name in FEATURES)

        def predict(config: Mapping[str, int]) -> float:
            return sum(w * f for w, f in zip(weights, features(config))) + intercept

        return predict

    @property
    def full_network_ms(self) -> Optional[float]:
        """The full network's latency when the model was measured (the fit's first network is the largest config,
        timed in the same rounds as the others), or None for a model without fit networks."""
        return float(self.networks[0]["measured_ms"]) if self.networks else None

    def drift(self, full_network_ms: float) -> Optional[Drift]:
        """How the device's speed moved since the model was measured, from the full network timed now (None when
        the model holds no timing of it)."""
        then = self.full_network_ms
        return None if then is None else Drift(then, float(full_network_ms))

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
                       coefficients={name: float(data["coefficients"][name]) for name in FEATURES},
                       networks=list(data.get("networks") or []), timing=dict(data.get("timing") or {}),
                       created=str(data.get("created", "")), seconds=float(data.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: malformed latency model ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class Drift:
    """The full network's latency when a latency model was measured and now.

    A device runs everything slower or faster for minutes at a time (another job, its clock, a shared host):
    timings taken together agree, timings taken apart can differ by tens of percent in level. The predictions
    keep the level of the model's measurement, so a measured latency differs from its prediction by about
    :attr:`ratio` as well as by the model's error. The full network is timed beside the networks it checks.
    """

    then_ms: float
    now_ms: float

    @property
    def ratio(self) -> float:
        """Now over then: 1.2 means the device runs 20% slower than when the model was measured."""
        return self.now_ms / self.then_ms

    @property
    def warning(self) -> Optional[str]:
        """One line when the level moved by more than :data:`DRIFT_TOLERANCE`, else None."""
        if abs(self.ratio - 1) <= DRIFT_TOLERANCE:
            return None
        direction = "slower" if self.ratio > 1 else "faster"
        return (f"the device runs {abs(self.ratio - 1):.0%} {direction} than when the latency model was measured (the "
                f"full network: {self.now_ms:.3f} ms now, {self.then_ms:.3f} ms then), so measured latencies differ "
                f"from the predictions by about as much; if it lasts, measure the model again (autoslim latency RUN "
                f"--rebuild)")

    def to_dict(self) -> dict[str, Any]:
        return {"full_network_ms_then": self.then_ms, "full_network_ms_now": self.now_ms, "ratio": self.ratio,
                "warning": self.warning}


def supernet_fingerprint(supernet: Supernet) -> str:
    """A digest of what a latency model depends on: the units with their choices, the layer calls with their
    shapes, the input size and image channels."""
    trace = supernet.trace
    described = {"units": [[u.name, u.maximum, list(u.choices), u.frozen is None] for u in supernet.units],
                 "calls": [[c.module, c.kind, [list(s) for s in c.inputs], [list(s) for s in c.outputs], c.out_spatial,
                            c.train_only] for c in trace.calls],
                 "input": [trace.in_channels, trace.input_size]}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def feature_function(model: LatencyModel, supernet: Supernet
                      ) -> Callable[[Mapping[str, int]], tuple[float, float, float]]:
    """``config -> (lookup ms, activations in millions per image, MACs in millions per image)`` on ``supernet``."""
    calls = supernet.trace.calls
    tables = [(table, calls[table.call].inputs, calls[table.call].out_unit) for table in model.layers]
    writers = []  # (inputs, out unit, per-channel output positions, output follows the input)
    for call in calls:
        if call.train_only:
            continue
        follows = call.kind in ("dwconv", "bn", "ln", "chconv")
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
