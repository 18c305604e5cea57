"""A SEARCH's configs exported: the config file and, on request, the standalone network.

``autoslim export-config`` (:func:`export_search`) reopens a SEARCH, takes the config of a target (the
first trajectory point meeting it, AutoSlim section 3.3) or of a step, writes it as a config file and,
on request, the standalone network (:func:`autoslim.network.static.materialize`) in one of the formats of
:mod:`autoslim.export.formats`, each checked to reproduce the supernet at that config before it is written.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..channel_config import ChannelConfig, load_config, save_config
from ..checkpoint import CHECKPOINT_NAME, Run, load_run
from ..io import read_yaml
from ..network.static import materialize
from ..search.targets import Target, pick
from ..search.trajectory import read_trajectory
from ..training.calibrate import recalibrate
from .formats import ExportCheck, export_onnx, export_program, export_torchscript, require_onnx

__all__ = ["search_run_dir", "search_config", "calibrated_static", "ExportResult", "export_search"]


def search_run_dir(search_dir: str | os.PathLike) -> Path:
    """The supernet run a SEARCH directory was made from (its ``run.yaml`` names it).

    A relative run path that does not resolve from here is looked for beside the SEARCH (the default
    SEARCH is ``RUN/search``).

    Raises:
        FileNotFoundError: ``search_dir`` is not a SEARCH, or its run is nowhere to be found.
    """
    search = Path(search_dir)
    if not (search / "trajectory.csv").is_file():
        raise FileNotFoundError(f"{search}: no trajectory.csv here; a SEARCH directory is made by "
                                "`autoslim search RUN --flops BUDGET --out SEARCH`")
    settings = read_yaml(search / "run.yaml") if (search / "run.yaml").is_file() else {}
    named = Path(str(settings.get("run"))) if isinstance(settings, dict) and settings.get("run") else None
    for candidate in (named, search.parent):
        if candidate is not None and (candidate / CHECKPOINT_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"{search}: its supernet run {named or '(unnamed)'} holds no {CHECKPOINT_NAME}; run this "
                            "command from the directory the search ran in, or restore the run")


def search_config(search_dir: str | os.PathLike, run: Run, *, target: Target | None = None,
                  step: int | None = None,
                  predict: Callable[[Mapping[str, int]], float] | None = None) -> tuple[str, ChannelConfig]:
    """The config of a search at ``target`` (its first trajectory point meeting it) or at trajectory ``step``.

    Targets the search was given and targets it was not are treated alike: the trajectory is the product,
    and each target takes the first point at or under it.

    Args:
        search_dir: the SEARCH directory.
        run: its supernet run (:func:`autoslim.checkpoint.load_run` of :func:`search_run_dir`).
        target: a budget; exactly one of ``target`` and ``step``.
        step: a trajectory step (0 is the largest config).
        predict: a latency model's predictor (:meth:`autoslim.latency.LatencyModel.bind`), needed by a latency
            target: every trajectory point is priced with it (whatever latency the search recorded).

    Returns:
        A label (``flops-300M``, ``step-41``) and the config, with its cost and source.

    Raises:
        ValueError: no point meets the target (the search stopped before it), the step is not in the
            trajectory, or the trajectory does not fit the run's supernet.
    """
    if (target is None) == (step is None):
        raise ValueError("give exactly one of a target (--flops, --params) or a trajectory step (--step)")
    search = Path(search_dir)
    supernet = run.supernet
    steps = read_trajectory(search / "trajectory.csv", supernet.largest_config())
    if predict is not None:
        steps = [dataclasses.replace(s, latency_ms=predict(s.config)) for s in steps]
    if target is not None:
        point, label = pick(steps, target), target.label
    else:
        if not 0 <= step < len(steps):
            raise ValueError(f"--step {step}: the trajectory of {search} has steps 0 to {len(steps) - 1}")
        point, label = steps[step], f"step-{step}"
    try:
        channels = supernet.validate_config(point.config)
    except ValueError as error:
        raise ValueError(f"{search}/trajectory.csv does not fit the supernet of {run.path}: {error}") from None
    cost = supernet.cost(channels)
    source = {"search": str(search.resolve()), "run": str(run.path.resolve()), "step": point.step,
              "target": {target.kind: target.value} if target is not None else None, "score": point.accuracy}
    return label, ChannelConfig(space=run.settings.space, channels=channels, space_options=dict(run.space_options),
                                cost={"macs": cost.macs, "params": cost.params,
                                      "input_size": run.space_options.get("input_size")},
                                source=source)


def calibrated_static(run: Run, config: Mapping[str, int], data: Any) -> nn.Module:
    """The static network of ``config`` with the supernet's weights and BatchNorm statistics recalibrated for it.

    Recalibration is the one training uses before evaluating a config (``calib_batches`` shuffled, augmented training
    batches of ``eval_batch_size`` images, the same seed), so the result is reproducible. The supernet is
    left at ``config`` with those statistics, in eval mode.
    """
    from ..training.sandwich import derive_seed

    settings, supernet = run.settings, run.supernet
    supernet.set_config(supernet.validate_config(config))
    generator = torch.Generator().manual_seed(derive_seed("calibration", settings.seed))
    size = min(settings.eval_batch_size, len(data.train))
    batches = data.batches("train", size, shuffle=True, augment=True, generator=generator, device=run.device)
    recalibrate(supernet, batches, settings.calib_batches)
    supernet.eval()
    return materialize(supernet).eval()


@dataclass
class ExportResult:
    """What :func:`export_search` wrote.

    Attributes:
        label: the target's label (``flops-300M``) or ``step-N``.
        config: the config written.
        config_path: where.
        checks: one per model file written, in the order written.
        latency: for a latency target, the config's measured latency beside the uniform and full networks
            (:class:`autoslim.latency.LatencyComparison`).
        latency_model: for a latency target, the model used: ``path``, ``status``, ``described`` and ``drift`` (the
            full network now against when the model was measured: :class:`autoslim.latency.Drift`).
    """

    label: str
    config: ChannelConfig
    config_path: Path
    checks: list[ExportCheck] = field(default_factory=list)
    latency: Any = None
    latency_model: dict[str, Any] | None = None


_FORMATS = {".pt2": ("torch.export", export_program)}


def export_search(search_dir: str | os.PathLike, *, target: Target | None = None, step: int | None = None,
                  out: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
                  onnx: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                  force: bool = False, check_images: int = 64, latency_key: Any = None, latency_timer: Any = None,
                  on_latency: Callable[[int, int, str], None] | None = None) -> ExportResult:
    """Write the config of a search at a target or step, and on request the standalone network.

    ``model`` is written as TorchScript, or as a ``torch.export`` program when it ends in ``.pt2``; ``onnx``
    as ONNX. Each holds the supernet's weights sliced to the config and BatchNorm statistics recalibrated
    for it (see :func:`calibrated_static`), with metadata (config, cost, input normalisation, classes), and
    is written only after its outputs were checked to equal the supernet's at the config, in eval mode,
    on ``check_images`` test images and on a batch of one.

    Args:
        search_dir: the SEARCH directory.
        target: a budget (the first trajectory point meeting it); or
        step: a trajectory step.
        out: the config file (default ``SEARCH/configs/LABEL.yaml``).
        model: TorchScript (``.pt``) or ``torch.export`` (``.pt2``) file to write.
        onnx: ONNX file to write (needs the ``onnx`` extra).
        data_dir: where the run's data lives now (default: as in training); needed for a model file.
        force: overwrite existing files.
        check_images: test images of the check batch.
        latency_key: what a latency target is measured on (:class:`autoslim.latency.LatencyKey`; default: CPU, torch,
            batch 1, one thread). Its model comes from ``RUN/latency/`` or is measured now; the config is measured
            as a whole network beside the widest uniform network within the target, the uniform network of equal
            MACs and the full network (``ExportResult.latency``), and the config file records predicted and
            measured latency.
        latency_timer: what measures latency (default: :func:`autoslim.latency.make_timer`).
        on_latency: called as a latency model is measured.

    Raises:
        FileNotFoundError: no SEARCH, run or data where they were looked for.
        ValueError: a target no trajectory point meets, a step outside the trajectory, files that exist
            (without ``force``).
        RuntimeError: the ONNX packages are missing, or an export does not reproduce the supernet.
    """
    if onnx is not None:
        require_onnx()
    search = Path(search_dir)
    run = load_run(search_run_dir(search), device="cpu")
    predict = timer = found = None
    if target is not None and target.kind == "latency":
        from ..latency import LatencyKey, latency_model, make_timer

        latency_key = latency_key if latency_key is not None else LatencyKey()
        timer = latency_timer if latency_timer is not None else make_timer(latency_key)
        found = latency_model(run.path, run.supernet, latency_key, timer=timer, on_progress=on_latency)
        predict = found.model.bind(run.supernet)
    label, config = search_config(search, run, target=target, step=step, predict=predict)
    config_path = Path(out) if out is not None else search / "configs" / f"{label}.yaml"
    _check_writable(config_path, force, same=lambda: _same_config(config_path, config))
    files = [Path(p) for p in (model, onnx) if p is not None]
    for path in files:
        _check_writable(path, force)
    if len(set(files + [config_path])) < len(files) + 1:
        raise ValueError("the config, --model and --onnx files must be different files")
    result = ExportResult(label, config, config_path)
    if predict is not None:
        from ..latency import compare_latency

        result.latency = compare_latency(run.supernet, config.channels, timer, budget_ms=target.value, predict=predict)
        drift = found.model.drift(result.latency.full.measured_ms)
        result.latency_model = {"path": str(found.path), "status": found.status, "described": latency_key.describe(),
                                "drift": drift.to_dict() if drift else None}
        config.cost["latency"] = {"predicted_ms": predict(config.channels),
                                  "measured_ms": result.latency.searched.measured_ms, **latency_key.to_dict(),
                                  "description": found.model.description}
        if drift is not None:
            config.cost["latency"]["drift_ratio"] = drift.ratio
    if files:
        data = run.load_data(data_dir=data_dir)
        static = calibrated_static(run, config.channels, data)
        images = next(iter(data.batches("test", min(check_images, len(data.test)), device=run.device)))[0]
        with torch.no_grad():
            reference = run.supernet(images)
        metadata = _metadata(config, data)
        if model is not None:
            _, write = _FORMATS.get(Path(model).suffix, ("torchscript", export_torchscript))
            result.checks.append(write(static, images, reference, model, metadata=metadata))
        if onnx is not None:
            result.checks.append(export_onnx(static, images, reference, onnx, metadata=metadata))
    save_config(config_path, config)
    return result


def _check_writable(path: Path, force: bool, same: Callable[[], bool] | None = None) -> None:
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name")
    if path.exists() and not force and not (same is not None and same()):
        raise ValueError(f"{path} exists; pass --force to overwrite it, or choose another file")


def _same_config(path: Path, config: ChannelConfig) -> bool:
    """Whether ``path`` already holds ``config`` (rewriting it then changes nothing a user made)."""
    try:
        found = load_config(path)
    except (ValueError, FileNotFoundError):
        return False
    return found.space == config.space and found.channels == config.channels


def _metadata(config: ChannelConfig, data: Any) -> dict[str, Any]:
    """What a deployed model needs to know: its config and cost, and how to prepare its input."""
    from .. import __version__

    return {"format": "autoslim-model/1", "autoslim": __version__, **config.to_dict(),
            "input": {"shape": [data.in_channels, data.image_size, data.image_size], "dtype": "float32",
                      "normalize": "(pixel / 255 - mean) / std, per channel", "mean": list(data.mean),
                      "std": list(data.std)},
            "classes": list(data.classes) if data.classes is not None else None}
