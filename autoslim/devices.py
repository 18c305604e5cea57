"""Devices and data-parallel processes of a training run.

``--device auto`` picks CUDA where there is one. Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes
form one group (nccl on CUDA, gloo on CPU) for DistributedDataParallel; a single process needs none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["resolve_device", "ProcessGroup"]


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
