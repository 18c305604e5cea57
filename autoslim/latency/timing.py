"""Timing networks and single layers on a device and runtime, as a benchmark does.

A :class:`LatencyKey` names what a latency is measured on: the device (``cpu``, ``cuda``), the runtime (``torch``:
the TorchScript file ``export-config --model`` writes; ``onnxruntime``: the ONNX file of ``--onnx``), the batch
size and the CPU threads. A :class:`Timer` measures on it in rounds: each round warms up, then takes the median of
repeated timings (each over enough runs to last at least ``min_block_ms``), and a latency is the least of its
rounds' medians. What is timed together (the networks of a model's fit, a comparison) is interleaved, every round
timing each in turn, so that each one's rounds are spread over the whole measurement. The runtime is pinned to
``threads`` threads for the duration (``torch.set_num_threads``, restored afterwards; ONNX Runtime's intra-op
threads) and CUDA is timed with events after a synchronisation. :func:`make_timer` gives the timer of a key; tests
inject a fake one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch
from torch import nn

from .rounds import OnTimed, grouped_rounds, interleaved_ms, layers_ms

__all__ = ["DEVICES", "RUNTIMES", "LatencyKey", "TimingSettings", "Timer", "TorchTimer", "OnnxRuntimeTimer",
           "make_timer", "device_description", "require_onnxruntime"]

DEVICES = ("cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencyKey:
    """What a latency is measured on: device, runtime, batch size and CPU threads.

    Raises:
        ValueError: an unknown device or runtime, a batch or thread count below 1, or ONNX Runtime on CUDA.
    """

    device: str = "cpu"
    runtime: str = "torch"
    batch: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"unknown latency device {self.device!r}: use one of {', '.join(DEVICES)}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}")
        for name in ("batch", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"latency {name} must be a positive integer, got {value!r}")
        if self.runtime == "onnxruntime" and self.device != "cpu":
            raise ValueError("the onnxruntime runtime is timed on the CPU; use --runtime torch for CUDA")

    @property
    def label(self) -> str:
        """A file name: ``cpu-torch-b1-t1``."""
        return f"{self.device}-{self.runtime}-b{self.batch}-t{self.threads}"

    def describe(self) -> str:
        """``cpu, torch (TorchScript), batch 1, 1 thread``."""
        runtime = "torch (TorchScript)" if self.runtime == "torch" else "ONNX Runtime"
        threads = "" if self.device == "cuda" else f", {self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{self.device}, {runtime}, batch {self.batch}{threads}"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "runtime": self.runtime, "batch": self.batch, "threads": self.threads}


@dataclass(frozen=True)
class TimingSettings:
    """How a timing is taken: ``rounds`` rounds, each of ``warmup`` untimed runs and then the median of ``repeats``
    timings, each of as many runs as last ``min_block_ms`` (at least one); the latency is the least of the rounds'
    medians. Where several networks or layers are timed together, every round times each of them in turn.

    The median shrugs off a slow run; the least over interleaved rounds shrugs off a slow stretch of the machine
    (other work, a busy neighbour of a virtual machine), which on a shared CPU lasts seconds and slows every run in
    it. On a 2-core VM two timings of the same 30 ResNet-20 networks (median of 15, one round) agreed with a
    Spearman correlation of 0.66-0.90; with 5 interleaved rounds, 0.97-0.99 (``benchmarks/README.md``).

    ``statistic='min'`` takes the fastest timing of a round instead of the median. ``clock='thread'`` measures the
    CPU time of the calling thread instead of wall time: on one thread it equals the wall time of an idle machine and
    ignores the time other processes hold the core (a diagnostic for shared machines; the runtimes run
    single-threaded work in the calling thread)."""

    warmup: int = 5
    repeats: int = 15
    min_block_ms: float = 1.0
    statistic: str = "median"
    clock: str = "wall"
    rounds: int = 5

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.rounds < 1 or self.min_block_ms < 0:
            raise ValueError(f"timing needs warmup >= 0, repeats >= 1, rounds >= 1 and min_block_ms >= 0, got {self}")
        if self.statistic not in ("median", "min"):
            raise ValueError(f"unknown timing statistic {self.statistic!r}: use median or min")
        if self.clock not in ("wall", "thread"):
            raise ValueError(f"unknown timing clock {self.clock!r}: use wall or thread")


class Timer(Protocol):
    """Measures milliseconds per call on one :class:`LatencyKey`."""

    key: LatencyKey

    def layers(self, calls: Sequence[tuple[nn.Module, tuple[int, ...]]], on_timed: Optional[OnTimed] = None
               ) -> list[float]:
        """Milliseconds of one call of each single plain layer (``nn.Conv2d``, ``nn.Linear``) on an input of its
        shape, less the cost of calling the runtime on that input at all (what a layer inside a network does not pay
        again); timed together."""

    def networks(self, networks: Sequence[nn.Module], shape: tuple[int, ...], on_timed: Optional[OnTimed] = None
                 ) -> list[float]:
        """Milliseconds of one call of each whole static network, exported as the runtime runs it; timed together."""


def require_onnxruntime() -> None:
    """Raises RuntimeError, one line with the install command, unless onnx and onnxruntime are installed."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"the onnxruntime runtime needs {', '.join(missing)} (not installed): "
                           "pip install 'autoslim[onnx]'")


def device_description(key: LatencyKey) -> dict[str, Any]:
    """What identifies the machine a latency was measured on: CPU model, cores, torch (and runtime, GPU) versions.

    A cached latency model whose description differs from the current one is measured again.
    """
    described: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__}
    if key.runtime == "onnxruntime":
        import onnxruntime

        described["onnxruntime"] = onnxruntime.__version__
    if key.device == "cuda":
        described["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        described["cuda"] = torch.version.cuda
    return described


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_timer(key: LatencyKey, settings: TimingSettings = TimingSettings()) -> Timer:
    """The timer of ``key``.

    Raises:
        ValueError: CUDA asked for where there is none.
        RuntimeError: the onnxruntime runtime without its packages.
    """
    if key.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("latency device 'cuda': CUDA is not available here; measure on the cpu device")
    if key.runtime == "onnxruntime":
        require_onnxruntime()
        return OnnxRuntimeTimer(key, settings)
    return TorchTimer(key, settings)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op threads for a measurement, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _wall_clock(run: Callable[[], Any], number: int) -> float:
    began = time.perf_counter()
    for _ in range(number):
        run()
    return time.perf_counter() - began


def _thread_clock(run: Callable[[], Any], number: int) -> float:
    began = time.thread_time()
    for _ in range(number):
        run()
    return time.thread_time() - began


def _cuda_clock(run: Callable[[], Any], number: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(number):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def _cpu_clock(settings: TimingSettings) -> Callable[[Callable[[], Any], int], float]:
    return _thread_clock if settings.clock == "thread" else _wall_clock


def _check_clock(key: LatencyKey, settings: TimingSettings) -> None:
    if settings.clock == "thread" and (key.threads != 1 or key.device != "cpu"):
        raise ValueError("the thread clock measures one CPU thread: use it with threads 1 on the cpu device")


class _RoundTimer:
    """What both timers share: timing prepared runs in interleaved rounds (see :class:`TimingSettings`)."""

    key: LatencyKey
    settings: TimingSettings

    def __init__(self) -> None:
        self._empty: dict[tuple[int, ...], float] = {}  # an empty call per input shape: the runtime's own overhead

    def _clock(self, run: Callable[[], Any], number: int) -> float:
        raise NotImplementedError

    def _session(self) -> contextlib.AbstractContextManager:
        """What every timing runs inside (threads pinned)."""
        return _torch_threads(self.key.threads)

    def _prepare_layer(self, layer: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        raise NotImplementedError

    def _prepare_network(self, network: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        raise NotImplementedError

    def _interleave(self, runs: Sequence[Callable[[], Any]], on_timed: Optional[OnTimed] = None) -> list[list[float]]:
        with self._session():
            return interleaved_ms(runs, self.settings, self._clock, on_timed)

    def layers(self, calls: Sequence[tuple[nn.Module, tuple[int, ...]]], on_timed: Optional[OnTimed] = None
               ) -> list[float]:
        return layers_ms(calls, self._empty, self._prepare_layer, self._interleave, on_timed)

    def layer(self, layer: nn.Module, shape: tuple[int, ...]) -> float:
        return self.layers([(layer, shape)])[0]

    def network_rounds(self, networks: Sequence[nn.Module], shape: tuple[int, ...],
                       on_timed: Optional[OnTimed] = None) -> list[list[float]]:
        """Every round's milliseconds of each network (their least is what :meth:`networks` gives); in groups that
        fit the memory, each led by the first network (:func:`~autoslim.latency.rounds.grouped_rounds`)."""
        return grouped_rounds(networks, shape, lambda group, timed: self._interleave(
            [self._prepare_network(network, shape) for network in group], timed), on_timed)

    def networks(self, networks: Sequence[nn.Module], shape: tuple[int, ...], on_timed: Optional[OnTimed] = None
                 ) -> list[float]:
        return [min(rounds) for rounds in self.network_rounds(networks, shape, on_timed)]

    def network(self, network: nn.Module, shape: tuple[int, ...]) -> float:
        return self.networks([network], shape)[0]


class TorchTimer(_RoundTimer):
    """Times with torch: layers eagerly, whole networks as the TorchScript file ``export-config --model`` writes
    (traced, saved and loaded back), under ``torch.inference_mode``; on CUDA with events."""

    def __init__(self, key: LatencyKey, settings: TimingSettings = TimingSettings()) -> None:
        if key.runtime != "torch":
            raise ValueError(f"TorchTimer times the torch runtime, not {key.runtime!r}")
        super().__init__()
        self.key, self.settings = key, settings
        self.device = torch.device(key.device)
        _check_clock(key, settings)
        self._clock = _cuda_clock if self.device.type == "cuda" else _cpu_clock(settings)

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        with _torch_threads(self.key.threads), torch.inference_mode():
            yield

    def _prepare_layer(self, layer: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        layer = layer.to(self.device).eval()
        x = torch.randn(shape, device=self.device)
        return lambda: layer(x)

    def _prepare_network(self, network: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        from ..export import torchscript_bytes

        network = network.to(self.device).eval()
        x = torch.randn(shape, device=self.device)
        with _torch_threads(self.key.threads), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
            module = torch.jit.load(io.BytesIO(torchscript_bytes(network, x)), map_location=self.device)
        return lambda: module(x)


class OnnxRuntimeTimer(_RoundTimer):
    """Times with ONNX Runtime on the CPU: whole networks as the ONNX file ``export-config --onnx`` writes, single
    layers as one-node ONNX graphs, each in a session with ``threads`` intra-op threads and the default graph
    optimisations."""

    def __init__(self, key: LatencyKey, settings: TimingSettings = TimingSettings()) -> None:
        if key.runtime != "onnxruntime":
            raise ValueError(f"OnnxRuntimeTimer times the onnxruntime runtime, not {key.runtime!r}")
        require_onnxruntime()
        _check_clock(key, settings)
        super().__init__()
        self.key, self.settings = key, settings
        self._clock = _cpu_clock(settings)

    def _prepare(self, model: bytes, shape: tuple[int, ...]) -> Callable[[], Any]:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.key.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: torch.randn(shape).numpy()}
        return lambda: session.run(None, feed)

    def _prepare_layer(self, layer: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        from .onnx_graph import one_node_onnx

        return self._prepare(one_node_onnx(layer, shape), shape)

    def _prepare_network(self, network: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        from ..export import onnx_bytes

        network = network.cpu().eval()
        with _torch_threads(self.key.threads):
            model = onnx_bytes(network, torch.randn(shape))
        return self._prepare(model, shape)
