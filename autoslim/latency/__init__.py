"""Latency: a budget in milliseconds on the user's device and runtime (AutoSlim's targets beyond MACs).

- :mod:`~autoslim.latency.timing`: ``LatencyKey`` (device, runtime, batch, threads) and the timers that measure
  layers and whole exported networks like a benchmark (interleaved rounds of warm-up and a median of repeats, the
  least round kept; pinned threads, CUDA events);
- :mod:`~autoslim.latency.rounds`: how timings are scheduled: interleaved rounds, layers in chunks and networks in
  groups that fit the memory, each part tied to the first by an anchor;
- :mod:`~autoslim.latency.onnx_graph`: the one-node ONNX graphs that ONNX Runtime times a single layer as;
- :mod:`~autoslim.latency.model`: ``LatencyModel``, a per-layer lookup corrected by a fit on whole networks, and its
  predictor of milliseconds per config;
- :mod:`~autoslim.latency.build`: ``build_latency_model``, which times the layers and the whole networks and fits it;
- :mod:`~autoslim.latency.cache`: ``latency_model``, the model cached in ``RUN/latency/`` and measured again when
  the machine or the architecture changed;
- :mod:`~autoslim.latency.compare`: ``measure_config(s)`` and ``compare_latency``, a config's measured latency beside
  the uniform networks;
- :mod:`~autoslim.latency.check`: ``check_model``, a model's predictions against whole networks it has not seen,
  timed now.
"""

from .timing import (DEVICES, RUNTIMES, LatencyKey, TimingSettings, Timer, TorchTimer, OnnxRuntimeTimer, make_timer,
                     device_description, require_onnxruntime)
from .model import FORMAT, DRIFT_TOLERANCE, Drift, LayerTable, LatencyModel, supernet_fingerprint, Progress
from .build import build_latency_model, fit_configs, random_configs
from .cache import LATENCY_DIR, model_path, load_model, stale_reason, CachedModel, latency_model
from .compare import measure_config, measure_configs, Measured, LatencyComparison, compare_latency
from .check import spearman, ModelCheck, check_model

__all__ = ["DEVICES", "RUNTIMES", "LatencyKey", "TimingSettings", "Timer", "TorchTimer", "OnnxRuntimeTimer",
           "make_timer", "device_description", "require_onnxruntime", "FORMAT", "DRIFT_TOLERANCE", "Drift",
           "LayerTable", "LatencyModel", "build_latency_model", "fit_configs", "random_configs", "supernet_fingerprint",
           "Progress",
           "LATENCY_DIR", "model_path", "load_model", "stale_reason", "CachedModel", "latency_model",
           "measure_config", "measure_configs", "Measured", "LatencyComparison", "compare_latency", "spearman",
           "ModelCheck", "check_model"]
