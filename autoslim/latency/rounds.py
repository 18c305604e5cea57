"""How timings are scheduled: interleaved rounds, layers in chunks and networks in groups, tied by anchors.

Everything timed together is interleaved (:func:`interleaved_ms`): every round times each run in turn, so each one's
rounds are spread over the whole measurement and a slow stretch of the machine touches them all alike. What cannot
be held at once is timed in parts, one after the other: layers in chunks of :data:`CHUNK` (:func:`layers_ms`), whole
networks in groups that fit :data:`MEMORY_SHARE` of the available memory (:func:`grouped_rounds`; every TorchScript
module or ONNX Runtime session holds its weights, and a session also keeps an arena as large as the activations of
its batch, so two dozen large networks at a serving batch size do not fit). Every part after the first also times an
anchor from the first part and is scaled by the anchor's time there over its time here, so that a machine running
slower or faster from one part to the next does not shift the parts against each other.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    from .timing import TimingSettings

__all__ = ["CHUNK", "MEMORY_SHARE", "interleaved_ms", "layers_ms", "footprint", "available_memory", "memory_groups",
           "grouped_rounds"]

OnTimed = Callable[[int, int], None]  # (done, total): after each network or layer of each round

CHUNK = 64
"""Layers timed together at most (each holds its own session or module)."""

MEMORY_SHARE = 0.5
"""The share of the available memory that the networks timed together may take, by :func:`footprint`."""


def interleaved_ms(runs: Sequence[Callable[[], Any]], settings: "TimingSettings",
                    clock: Callable[[Callable[[], Any], int], float], on_timed: Optional[OnTimed] = None
                    ) -> list[list[float]]:
    """Every round's median (or least) milliseconds per run of each of ``runs``, timed in interleaved rounds.

    ``clock(run, number)`` returns the seconds ``number`` runs take. The block of runs per timing is sized once, by a
    warm-up and one timed run of each, to last ``min_block_ms``.
    """
    numbers = []
    for run in runs:
        for _ in range(settings.warmup):
            run()
        single_ms = clock(run, 1) * 1e3
        numbers.append(1 if single_ms >= settings.min_block_ms
                       else math.ceil(settings.min_block_ms / max(single_ms, 1e-6)))
    rounds: list[list[float]] = [[] for _ in runs]
    total = settings.rounds * len(runs)
    for r in range(settings.rounds):
        for i, (run, number) in enumerate(zip(runs, numbers)):
            for _ in range(settings.warmup):  # what ran in between left the caches to others
                run()
            times = [clock(run, number) / number for _ in range(settings.repeats)]
            rounds[i].append((min(times) if settings.statistic == "min" else statistics.median(times)) * 1e3)
            if on_timed:
                on_timed(r * len(runs) + i + 1, total)
    return rounds


def layers_ms(calls: Sequence[tuple[nn.Module, tuple[int, ...]]], empty: dict[tuple[int, ...], float],
               prepare: Callable[[nn.Module, tuple[int, ...]], Callable[[], Any]],
               interleave: Callable[..., list[list[float]]], on_timed: Optional[OnTimed]) -> list[float]:
    """Each layer's least round less the cost of an empty call on its shape (``empty``, measured with the first
    chunk that needs it and kept), in chunks of ``CHUNK`` interleaved layers. Every chunk after the first also times
    the first chunk's slowest layer, the anchor, and is scaled by its time in the first chunk over its time in this
    one: a machine running slower or faster from one chunk to the next does not shift their layers against each
    other (:func:`grouped_rounds` does the same for groups of networks)."""
    results: list[float] = []
    anchor: Optional[tuple[Callable[[], Any], float]] = None  # the anchor's run and its time in the first chunk
    for start in range(0, len(calls), CHUNK):
        chunk = calls[start:start + CHUNK]
        shapes = list(dict.fromkeys(shape for _, shape in chunk if shape not in empty))
        runs = [prepare(nn.Identity(), shape) for shape in shapes] + [prepare(layer, shape) for layer, shape in chunk]
        runs += [anchor[0]] if anchor else []

        def timed(done: int, total: int, offset: int = start) -> None:
            if on_timed:
                on_timed(offset + round(done / total * len(chunk)), len(calls))

        least = [min(r) for r in interleave(runs, timed)]
        if anchor is None:
            slowest = max(range(len(chunk)), key=lambda i: least[len(shapes) + i])
            anchor = runs[len(shapes) + slowest], least[len(shapes) + slowest]
        else:
            scale = anchor[1] / least.pop()
            least = [ms * scale for ms in least]
        empty.update(zip(shapes, least[:len(shapes)]))
        results += [max(0.0, ms - empty[shape]) for ms, (_, shape) in zip(least[len(shapes):], chunk)]
    return results


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
    single = budget is None or len(networks) < 2  # nothing to split: no footprints to measure
    groups = [list(range(len(networks)))] if single else memory_groups([footprint(n, shape) for n in networks], budget)
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
        if anchor_ms is None:  # the first group sets the level
            anchor_ms = least
        scale = anchor_ms / least
        for i, network_rounds in zip(group, timed_rounds):
            if rounds[i] is None:
                rounds[i] = [ms * scale for ms in network_rounds]
        done_before += len(group)
    return rounds  # type: ignore[return-value]
