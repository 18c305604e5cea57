"""Devices and data-parallel processes of a training run.

``--device auto`` picks CUDA where there is one. Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes
form one group (nccl on CUDA, gloo on CPU) for DistributedDataParallel; a single process needs none.
:func:`keep_freed_memory` stops glibc from handing a CPU training step's memory back to the system after
every step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["resolve_device", "ProcessGroup", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA where available, else the CPU; ``cuda`` is the local rank's GPU.

    Raises:
        ValueError: CUDA asked for where there is none.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available here; use --device cpu (or auto)")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)


@dataclass
class ProcessGroup:
    """The data-parallel group of a ``torchrun`` launch, or a single process (``world == 1``).

    ``owned``: this object initialised the torch.distributed group, and :meth:`close` destroys it.
    """

    rank: int = 0
    world: int = 1
    owned: bool = False

    @classmethod
    def start(cls, device: torch.device) -> ProcessGroup:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if device.type == "cuda":
            torch.cuda.set_device(device)  # each rank's NCCL communicator on its own GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owned=True)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: Tensor) -> Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system.

    A training step on the CPU frees and reallocates tens of megabytes of activations and gradients. By
    default glibc returns large blocks to the system (heap trimming, ``munmap``) and the next step faults
    the same pages in again: 5,000-20,000 page faults and up to a quarter of the time of a CIFAR ResNet-20
    step here (batch 128), depending on the allocation pattern (the supernet's full-size gradients make it
    worse than the static network's). With this, blocks up to 32 MiB come from the heap and the heap is not
    trimmed; the process keeps its peak memory. Process-wide and idempotent.

    Returns:
        Whether the setting was applied (False where the C library has no ``mallopt``).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
