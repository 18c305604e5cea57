"""Latency models cached in the run directory, one file per device, runtime, batch and threads.

``RUN/latency/cpu-torch-b1-t1.json`` holds the model of :mod:`autoslim.latency.model` with what it was measured on
(CPU model, torch and runtime versions, the supernet's architecture). :func:`latency_model` returns the cached model
when it still describes this machine and this supernet, and measures (and writes, atomically) a new one otherwise,
saying why.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..io import write_json
from ..network.supernet import Supernet
from .build import build_latency_model
from .model import LatencyModel, Progress, supernet_fingerprint
from .timing import LatencyKey, Timer, device_description, make_timer

__all__ = ["LATENCY_DIR", "model_path", "load_model", "stale_reason", "CachedModel", "latency_model"]

LATENCY_DIR = "latency"
_COMPARED = ("cpu", "torch", "onnxruntime", "gpu", "cuda")  # what must match for a cached model to be used


def model_path(run_dir: str | os.PathLike, key: LatencyKey) -> Path:
    """Where the model of ``key`` is cached: ``RUN/latency/cpu-torch-b1-t1.json``."""
    return Path(run_dir) / LATENCY_DIR / f"{key.label}.json"


def load_model(path: str | os.PathLike) -> LatencyModel:
    """Read a cached model.

    Raises:
        FileNotFoundError: no file there.
        ValueError: not a latency model, or malformed (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no latency model here; measure one with `autoslim latency RUN`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a latency model ({error})") from None
    return LatencyModel.from_dict(data, str(path))


def stale_reason(model: LatencyModel, supernet: Supernet, key: LatencyKey) -> Optional[str]:
    """Why ``model`` no longer describes ``key`` on this machine and ``supernet`` (None if it still does)."""
    if model.key != key:
        return f"it was measured on {model.key.describe()}"
    if model.fingerprint != supernet_fingerprint(supernet):
        return "the supernet's architecture changed"
    if model.timing and model.timing.get("rounds", 1) < 2:
        return "it was timed in one round per network (an older protocol that a slow stretch of the machine skews)"
    now = device_description(key)
    for name in _COMPARED:
        if model.description.get(name) != now.get(name):
            return f"{name} was {model.description.get(name)!r}, now {now.get(name)!r}"
    return None


@dataclass
class CachedModel:
    """What :func:`latency_model` found or made.

    Attributes:
        model: the latency model.
        path: its file.
        status: ``cached`` (read from the file), ``measured`` (no file yet) or ``remeasured: WHY``.
    """

    model: LatencyModel
    path: Path
    status: str


def latency_model(run_dir: str | os.PathLike, supernet: Supernet, key: LatencyKey, *, timer: Optional[Timer] = None,
                  networks: int = 24, seed: int = 0, rebuild: bool = False,
                  on_progress: Optional[Progress] = None) -> CachedModel:
    """The latency model of ``supernet`` on ``key``, from ``RUN/latency/`` or measured now (and cached there).

    A cached file is measured again when it is unreadable, describes another machine (CPU model, torch or runtime
    version, GPU) or another architecture, was timed by the older one-round protocol, or when ``rebuild`` is set.

    Args:
        run_dir: the supernet run directory.
        supernet: the run's supernet.
        key: device, runtime, batch and threads.
        timer: what measures (default :func:`~autoslim.latency.timing.make_timer` of ``key``).
        networks: whole networks of the fit, when measuring.
        seed: draws the fit's random configs.
        rebuild: measure even if a fresh model is cached.
        on_progress: called after every measurement.

    Raises:
        ValueError, RuntimeError: as :func:`~autoslim.latency.timing.make_timer` (no CUDA, no onnxruntime).
    """
    path = model_path(run_dir, key)
    status = "measured"
    if path.exists():
        try:
            cached = load_model(path)
        except ValueError as error:
            status = f"remeasured: the cached file was unreadable ({error})"
        else:
            reason = "asked to" if rebuild else stale_reason(cached, supernet, key)
            if reason is None:
                return CachedModel(cached, path, "cached")
            status = f"remeasured: {reason}"
    timer = timer if timer is not None else make_timer(key)
    model = build_latency_model(supernet, timer, networks=networks, seed=seed, on_progress=on_progress)
    write_json(path, model.to_dict())
    return CachedModel(model, path, status)
