"""A trained network's weights, read from what a user has: the state dict that ``--init`` starts a supernet from.

:func:`read_weights` accepts

- a ``.pt`` / ``.pth`` file holding a state dict (``torch.save(model.state_dict(), path)``, as torchvision's and
  timm's weights are saved), or a training checkpoint that holds one under ``state_dict``, ``model``,
  ``model_state_dict`` or ``module`` (timm's and torchvision's reference scripts); a ``module.`` or ``_orig_mod.``
  prefix on every key (DistributedDataParallel, ``torch.compile``) is removed;
- a ``.safetensors`` file (timm's format);
- a TorchScript file (``autoslim export-config --model net.pt``);
- an ``autoslim retrain`` directory or its ``checkpoint.pt`` (the trained network of one config).

Files are read with ``torch.load(weights_only=True)``: tensors and plain values only, nothing is executed. Nothing
is downloaded. Every failure is a ``ValueError`` or ``FileNotFoundError`` of one line that names the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .checkpoint import CHECKPOINT_NAME

__all__ = ["read_weights", "file_sha256", "NESTED_KEYS"]

NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
"""Keys under which training checkpoints keep the network's state dict, tried in this order."""
_PREFIXES = ("module.", "_orig_mod.")
_RETRAIN_FORMAT = "autoslim-retrain/1"  # autoslim.training.retrain_setup.FORMAT, not imported: it pulls in the trainer


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], Path]:
    """The state dict of the trained network at ``path`` (see the module docstring), on the CPU.

    Returns:
        The state dict and the file it was read from (``checkpoint.pt`` for a retrain directory).

    Raises:
        FileNotFoundError: nothing at ``path``, or a directory without a checkpoint.
        ValueError: an unreadable file, or one that holds no state dict (a supernet checkpoint, a joint retraining).
    """
    file = weights_file(path)
    state = _load(file)
    return _state_dict(state, file), file


def weights_file(path: str | os.PathLike) -> Path:
    """The file :func:`read_weights` reads for ``path``: the file itself, or a retrain directory's checkpoint.

    Raises:
        FileNotFoundError: nothing at ``path``, or a directory without a checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        file = path / CHECKPOINT_NAME
        if not file.is_file():
            raise FileNotFoundError(f"{path}: a directory without {CHECKPOINT_NAME}; --init takes a weights file "
                                    "(.pt, .pth, .safetensors) or an autoslim retrain directory")
        return file
    if path.is_file():
        return path
    raise FileNotFoundError(f"{path}: no such file or directory")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in blocks (recorded beside a run's ``init``, so its source can be recognised)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    _, marker, rest = text.partition("WeightsUnpickler error:")  # torch's advice before it is about trusting the file
    if marker:
        text = rest.strip().split(" Check the documentation")[0].split(". Please use")[0]
    return text[:160] or type(error).__name__


def _load(file: Path) -> Any:
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{file}: reading .safetensors needs the safetensors package: "
                             "pip install safetensors") from None
        try:
            return load_file(str(file), device="cpu")
        except Exception as error:  # its own and I/O errors alike: one line, never a traceback
            raise ValueError(f"{file} is not a readable safetensors file: {_reason(error)}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.load's note on TorchScript archives, torch.jit's deprecation
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:
            pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
            if pickled:
                raise ValueError(f"{file} holds pickled Python objects ({pickled.group(1)}), not only tensors, "
                                 "so it is not loaded: save torch.save(model.state_dict(), path) instead") from None
            if "TorchScript" not in str(error):
                raise ValueError(f"{file} is not a readable weights file (truncated or corrupt?): "
                                 f"{_reason(error)}") from None
        try:  # a TorchScript archive (export-config --model): its module's state dict
            return torch.jit.load(str(file), map_location="cpu").state_dict()
        except Exception as error:
            raise ValueError(f"{file} is not a readable TorchScript file: {_reason(error)}") from None


def _state_dict(state: Any, file: Path) -> dict[str, Tensor]:
    """The network's state dict inside what ``file`` held."""
    if isinstance(state, Mapping) and isinstance(state.get("format"), str):
        if state["format"] != _RETRAIN_FORMAT:
            raise ValueError(f"{file} is an autoslim checkpoint of format {state['format']!r}, not a trained network: "
                             "--init takes the weights of one network (a retrain directory, or a state dict file)")
        if state.get("network") == "joint":
            raise ValueError(f"{file} holds a joint retraining of several configs; --init takes one network's weights")
        state = state.get("model")
    if isinstance(state, Mapping) and not _is_state_dict(state):
        for key in NESTED_KEYS:
            if isinstance(state.get(key), Mapping) and _is_state_dict(state[key]):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not _is_state_dict(state):
        found = ", ".join(repr(k) for k in list(state)[:5]) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{file} holds no state dict (parameter names -> tensors), nor one under "
                         f"{', '.join(NESTED_KEYS)}; found {found or 'nothing'}")
    weights = {str(key): value for key, value in state.items()}
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in weights):
            weights = {key[len(prefix):]: value for key, value in weights.items()}
    return weights


def _is_state_dict(state: Mapping) -> bool:
    return bool(state) and all(isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items())
