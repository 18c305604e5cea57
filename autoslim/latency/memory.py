"""Timing many whole networks together without holding more memory than the machine has.

Networks timed together (:meth:`~autoslim.latency.timing.Timer.networks`) are all prepared before the first round:
every TorchScript module or ONNX Runtime session holds its weights, and a session also keeps an arena as large as
the activations of its batch. Two dozen large networks at a serving batch size do not fit in memory. So they are
timed in groups that fit :data:`MEMORY_SHARE` of the memory available, and every group after the first also times
the first network, the anchor: a group's timings are scaled by the anchor's time in the first group over its time in
this one, so that a machine running slower or faster between groups does not shift one group against another.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["MEMORY_SHARE", "footprint", "available_memory", "memory_groups", "grouped_rounds"]

MEMORY_SHARE = 0.5
"""The share of the available memory that the networks timed together may take, by :func:`footprint`."""


def footprint(network: nn.Module, shape: Sequence[int]) -> int:
    """Bytes a prepared network may hold: its parameters and buffers, and every activation its modules write on an
    input of ``shape`` (an upper bound of a runtime's arena, which reuses memory), at 4 bytes an element. Measured
    by one forward pass at batch 1, scaled to the batch."""
    weights = sum(t.numel() for t in network.parameters()) + sum(t.numel() for t in network.buffers())
    written = [0]

    def hook(module, inputs, output):
        if not list(module.children()) and isinstance(output, torch.Tensor):
            written[0] += output.numel()

    handles = [module.register_forward_hook(hook) for module in network.modules()]
    try:
        device = next((t.device for t in network.parameters()), torch.device("cpu"))
        with torch.no_grad():
            network.eval()(torch.zeros((1, *shape[1:]), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return 4 * (weights + shape[0] * written[0])


def available_memory() -> Optional[int]:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_groups(footprints: Sequence[int], budget: Optional[int]) -> list[list[int]]:
    """Indices of networks timed together, in order: all in one group if their footprints fit ``budget`` (or there
    is no budget); else consecutive groups that fit it, each after the first led by network 0 (the anchor). A
    network too large to share the budget is timed with the anchor alone."""
    if budget is None or sum(footprints) <= budget or len(footprints) < 2:
        return [list(range(len(footprints)))]
    groups, group, used = [], [0], footprints[0]
    for i in range(1, len(footprints)):
        if len(group) > 1 and used + footprints[i] > budget:
            groups.append(group)
            group, used = [0], footprints[0]
        group.append(i)
        used += footprints[i]
    groups.append(group)
    return groups


def grouped_rounds(networks: Sequence[nn.Module], shape: Sequence[int],
                   time_group: Callable[[Sequence[nn.Module], Callable[[int, int], None]], list[list[float]]],
                   on_timed: Optional[Callable[[int, int], None]] = None,
                   budget: Optional[int] = -1) -> list[list[float]]:
    """Every round's milliseconds of each network, timed by ``time_group(networks, on_timed)`` in the groups of
    :func:`memory_groups` (``budget`` -1: :data:`MEMORY_SHARE` of :func:`available_memory`), each group after the
    first scaled to the first by the anchor (see the module docstring)."""
    if budget == -1:
        available = available_memory()
        budget = None if available is None else int(MEMORY_SHARE * available)
    groups = memory_groups([footprint(n, shape) for n in networks], budget) if budget is not None and len(networks) > 1 \
        else [list(range(len(networks)))]
    if len(groups) == 1:
        return time_group(networks, on_timed or (lambda done, total: None))
    rounds: list[Optional[list[float]]] = [None] * len(networks)
    total, done_before = sum(len(g) for g in groups), 0
    anchor_ms = None
    for group in groups:
        def timed(done: int, of: int, before: int = done_before, size: int = len(group)) -> None:
            if on_timed:
                on_timed(before + round(done / of * size), total)

        timed_rounds = time_group([networks[i] for i in group], timed)
        least = min(timed_rounds[0])
        scale = 1.0 if anchor_ms is None else anchor_ms / least
        anchor_ms = least if anchor_ms is None else anchor_ms
        for i, network_rounds in zip(group, timed_rounds):
            if rounds[i] is None:
                rounds[i] = [ms * scale for ms in network_rounds]
        done_before += len(group)
    return rounds  # type: ignore[return-value]
