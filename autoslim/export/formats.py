"""The file formats of a standalone network: TorchScript, a ``torch.export`` program and ONNX.

Each writer checks the file it is about to write reproduces a reference output (the supernet at the config) on a
batch and on a batch of one, and writes it only then, atomically. The ``*_bytes`` functions give the same files in
memory, for latency measurement (:mod:`autoslim.latency.timing`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..io import atomic_write

__all__ = ["ExportCheck", "export_torchscript", "export_program", "export_onnx", "torchscript_bytes", "onnx_bytes",
           "require_onnx", "ONNX_PACKAGES"]


# Of the largest output magnitude. Other float32 kernels (TorchScript, ONNX Runtime) differ by ~1e-6 of it; a
# wrong weight, channel or BatchNorm statistic by orders of magnitude more.
_TOLERANCE = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


@dataclass(frozen=True)
class ExportCheck:
    """How an exported file was checked against the supernet.

    Attributes:
        path: the file written.
        format: ``torchscript``, ``torch.export`` or ``onnx``.
        images: images of the check batch (the file was also run on a batch of one).
        max_abs_diff: the largest absolute difference between its outputs and the supernet's.
    """

    path: Path
    format: str
    images: int
    max_abs_diff: float


def _compare(outputs: Any, reference: Any, what: str) -> float:
    """The largest absolute difference over every output tensor (a network may return a list, tuple or dict of
    them: a feature pyramid, a segmentation head with its auxiliary output); raises if it exceeds ``_TOLERANCE`` of
    the largest output magnitude."""
    from torch.utils._pytree import tree_leaves

    outputs, reference = tree_leaves(outputs), tree_leaves(reference)
    if len(outputs) != len(reference):
        raise RuntimeError(f"{what} gives {len(outputs)} outputs, the supernet {len(reference)}; nothing was written")
    return max((_compare_tensor(o, r, what) for o, r in zip(outputs, reference)), default=0.0)


def _compare_tensor(outputs: Tensor, reference: Tensor, what: str) -> float:
    outputs, reference = torch.as_tensor(outputs).float(), reference.detach().float()
    if outputs.shape != reference.shape:
        raise RuntimeError(f"{what} gives outputs of shape {tuple(outputs.shape)}, the supernet "
                           f"{tuple(reference.shape)}; nothing was written")
    if not reference.numel():
        return 0.0
    worst = float((outputs - reference).abs().max())
    allowed = _TOLERANCE * max(1.0, float(reference.abs().max()))
    if not worst <= allowed:  # also false for NaN
        raise RuntimeError(f"{what} does not reproduce the supernet: outputs differ by up to {worst:.3g} "
                           f"(allowed {allowed:.3g}); nothing was written")
    return worst


def _check_runs(run: Callable[[Tensor], Any], images: Tensor, reference: Any, what: str) -> float:
    """Compare ``run`` with the reference on the whole batch and on its first image alone (a batch of one)."""
    from torch.utils._pytree import tree_map

    with torch.no_grad():
        worst = _compare(run(images), reference, what)
        first = tree_map(lambda t: t[:1] if isinstance(t, Tensor) else t, reference)
        return max(worst, _compare(run(images[:1]), first, f"{what} (batch of one)"))


def export_torchscript(model: nn.Module, images: Tensor, reference: Tensor, path: str | os.PathLike, *,
                       metadata: Mapping[str, Any] | None = None) -> ExportCheck:
    """Trace ``model`` to TorchScript, check the file reproduces ``reference`` on ``images``, then write it.

    The file loads with ``torch.jit.load`` alone (no autoslim, no model code) and takes any batch size.
    ``metadata`` is stored as the extra file ``autoslim.json``.

    Raises:
        RuntimeError: the traced model's outputs differ from ``reference`` (nothing is written).
    """
    buffer = torchscript_bytes(model, images, metadata=metadata)
    loaded = torch.jit.load(io.BytesIO(buffer), map_location="cpu")
    worst = _check_runs(loaded, images, reference, f"the TorchScript model {path}")
    atomic_write(path, lambda stream: stream.write(buffer))
    return ExportCheck(Path(path), "torchscript", len(images), worst)


def torchscript_bytes(model: nn.Module, images: Tensor, *, metadata: Mapping[str, Any] | None = None) -> bytes:
    """``model`` (in eval mode) traced on ``images`` to TorchScript, as the file :func:`export_torchscript` writes."""
    model = model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        traced = torch.jit.trace(model, images, check_trace=False, strict=False)  # strict=False: dict outputs
        torch.jit.save(traced, buffer, _extra_files={"autoslim.json": json.dumps(dict(metadata or {}))})
    return buffer.getvalue()


def export_program(model: nn.Module, images: Tensor, reference: Tensor, path: str | os.PathLike, *,
                   metadata: Mapping[str, Any] | None = None) -> ExportCheck:
    """Export ``model`` with ``torch.export`` (dynamic batch), check it reproduces ``reference``, then write it.

    The file loads with ``torch.export.load(path).module()`` alone. ``metadata`` is stored as the extra file
    ``autoslim.json``.

    Raises:
        RuntimeError: the exported program's outputs differ from ``reference`` (nothing is written).
    """
    model = model.eval()
    program = torch.export.export(model, (images,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"autoslim.json": json.dumps(dict(metadata or {}))})
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    worst = _check_runs(loaded, images, reference, f"the exported program {path}")
    atomic_write(path, lambda stream: stream.write(buffer.getvalue()))
    return ExportCheck(Path(path), "torch.export", len(images), worst)


def require_onnx() -> None:
    """Check the packages of the ``onnx`` extra are installed.

    Raises:
        RuntimeError: one line naming the missing packages and the install command.
    """
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"ONNX export needs {', '.join(missing)} (not installed): "
                           "pip install 'autoslim[onnx]'")


def export_onnx(model: nn.Module, images: Tensor, reference: Tensor, path: str | os.PathLike, *,
                metadata: Mapping[str, Any] | None = None) -> ExportCheck:
    """Export ``model`` to ONNX (dynamic batch), check it with onnxruntime against ``reference``, then write it.

    Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime). ``metadata`` becomes the model's
    ``autoslim`` metadata property (JSON).

    Raises:
        RuntimeError: a package is missing, or the ONNX model's outputs differ from ``reference`` (nothing
            is written).
    """
    require_onnx()
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="autoslim-onnx-") as folder:
        temporary = os.path.join(folder, "model.onnx")
        _onnx_program(model, images, metadata).save(temporary)
        session = onnxruntime.InferenceSession(temporary, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(batch: Tensor) -> list[Tensor]:
            return [torch.from_numpy(out) for out in session.run(None, {name: batch.cpu().numpy()})]

        worst = _check_runs(run, images, reference, f"the ONNX model {path}")
        with open(temporary, "rb") as source:
            atomic_write(path, lambda stream: shutil.copyfileobj(source, stream))
    return ExportCheck(Path(path), "onnx", len(images), worst)


def onnx_bytes(model: nn.Module, images: Tensor, *, metadata: Mapping[str, Any] | None = None) -> bytes:
    """``model`` (in eval mode) exported to ONNX with a dynamic batch, as the file :func:`export_onnx` writes.

    Raises:
        RuntimeError: the packages of the ``onnx`` extra are missing.
    """
    require_onnx()
    return _onnx_program(model, images, metadata).model_proto.SerializeToString()


def _onnx_program(model: nn.Module, images: Tensor, metadata: Mapping[str, Any] | None):
    model = model.eval()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress lines and deprecation notes
        program = torch.onnx.export(model, (images,), input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)
    program.model.metadata_props["autoslim"] = json.dumps(dict(metadata or {}))
    return program
