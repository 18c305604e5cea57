"""Scoring search candidates on a large held-out batch, reusing what they share (AutoSlim section 3.3).

The paper scores each candidate on a large batch with BatchNorm statistics computed on that batch in
training mode. A candidate differs from the current network in one unit only, so everything upstream
of the first layer that unit touches is the same: :class:`BatchScorer` runs the current network once,
sweeping forward through the graph, and starts each candidate (taken in graph order of the first layer
it touches) from the activations the sweep holds at that point. Only the tensors crossing that point
are kept, so memory stays at a few activations of the batch. ``reuse=False`` runs every candidate from
the input (the plain loop); both give bit-identical scores on the CPU.

With ``calibration`` batches, BatchNorm statistics are instead recalibrated per candidate on separate
batches and the candidate is evaluated in eval mode (plain loop only).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.fx_graph import LeafTracer
from ..network.supernet import Supernet
from .greedy import Score

__all__ = ["BatchScorer", "batch_statistics"]


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except that BatchNorm normalises with the batch's own statistics and updates nothing."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    states = [(m.training, m.track_running_stats) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, (training, track) in zip(bns, states):
            m.train(training)
            m.track_running_stats = track
        model.train(was_training)


class BatchScorer:
    """An evaluator for :func:`autoslim.search.greedy_search` on one held-out batch.

    Args:
        supernet: the trained supernet (its config is restored after each call).
        images: the held-out batch (all of it goes through the network at once: BatchNorm uses its statistics).
        labels: its labels.
        reuse: start each candidate from the shared upstream activations (default) or from the input.
        calibration: optional batches to recalibrate BatchNorm on per candidate (disables reuse).
        cache_bytes: memory the current network's activations may keep between steps, so that a step
            recomputes only what the previous step's change invalidated.

    Attributes:
        macs_executed: multiply-accumulates run so far (all images), the measure of work.
        layer_calls: conv / linear layer calls made so far, each over the whole batch.
    """

    def __init__(self, supernet: Supernet, images: Tensor, labels: Tensor, *, reuse: bool = True,
                 calibration: Optional[Sequence[Tensor]] = None, cache_bytes: int = 2 << 30) -> None:
        self.supernet = supernet
        self.images, self.labels = images, labels
        self.calibration = calibration
        # Per-channel parameters read directly in forward (ConvNeXt's layer scale) are sliced on attribute
        # access, which a traced graph would freeze: such networks are scored by running them whole.
        self.reuse = reuse and calibration is None and not supernet.trace.parameters
        self.macs_executed = 0
        self.layer_calls = 0
        calls = supernet.trace.calls
        self._weighted = [call.kind not in ("bn", "ln") for call in calls]
        if not self.reuse:
            self._nodes = [None]
            self._call_positions = [-1 if call.train_only else 0 for call in calls]
            return
        was_training = supernet.model.training
        supernet.model.eval()  # the inference graph, as traced for the units (no auxiliary heads)
        try:
            graph = LeafTracer().trace(supernet.model)
        finally:
            supernet.model.train(was_training)
        self.graph_module = fx.GraphModule(supernet.model, graph)
        self._nodes = list(graph.nodes)
        self._position = {node: i for i, node in enumerate(self._nodes)}
        self._last_use = {node: max((self._position[u] for u in node.users), default=i) for i, node in enumerate(self._nodes)}
        first_call: dict[str, int] = {}
        for node in self._nodes:
            if node.op == "call_module":
                first_call.setdefault(str(node.target), self._position[node])
        self._call_positions = [first_call.get(call.module, -1) for call in calls]
        index = {unit.name: i for i, unit in enumerate(supernet.units)}
        self._index = index
        node_layouts = supernet.trace.node_layouts
        self._layout_of = {node: node_layouts.get(node.name) for node in self._nodes}
        # A candidate starts at the first layer that reads its unit: up to there, its tensors are the current
        # network's with fewer channels (conv outputs, BatchNorm over the batch, activations: all per channel).
        # A conv along the channels (ECA's) mixes neighbouring channels: it reads its unit too.
        self._start: dict[str, int] = {}
        for unit in supernet.slimmable_units:
            readers = [self._reader_position(c, first_call[c.module]) for c in calls
                       if c.kind in ("conv", "linear", "ln", "chconv") and c.module in first_call
                       and any(u == index[unit.name] for u, _ in c.inputs)]
            touched = [first_call[m] for m in unit.modules if m in first_call]
            self._start[unit.name] = min(readers) if readers else min(touched, default=0)
        self._traced_shapes = {n.name: getattr(n.meta.get("tensor_meta"), "shape", None)
                               for n in supernet.trace.graph_module.graph.nodes}
        self._cache_bytes = cache_bytes
        self._cache: dict[fx.Node, Tensor] = {}
        self._cache_config: Optional[dict[str, int]] = None
        self._cache_done = 0

    def _reader_position(self, call, position: int) -> int:
        """Where a reading call starts: at its node, or for a conv along the channels whose input was padded along
        them first (timm's circular ECA), at the padding: a padded tensor has no layout to slice."""
        node = self._nodes[position]
        while call.kind == "chconv" and node.args and isinstance(node.args[0], fx.Node) \
                and node.args[0].op != "placeholder" and self._layout_of.get(node.args[0]) is None:
            node = node.args[0]
        return self._position[node]

    # -- the evaluator protocol ----------------------------------------------------------------------

    def __call__(self, current: Mapping[str, int],
                 candidates: Sequence[tuple[Optional[str], Mapping[str, int]]]) -> list[Score]:
        return [self._score(logits) for logits in self.logits(current, candidates)]

    @torch.no_grad()
    def logits(self, current: Mapping[str, int],
               candidates: Sequence[tuple[Optional[str], Mapping[str, int]]]) -> list[Tensor]:
        """The network's outputs on the batch for every candidate, in order (see :data:`autoslim.search.Evaluator`)."""
        previous = self.supernet.config
        try:
            if not self.reuse:
                return [self._run_plain(config) for _, config in candidates]
            return self._run_reusing(dict(current), candidates)
        finally:
            self.supernet.set_config(previous)

    # -- plain loop ------------------------------------------------------------------------------------

    def _run_plain(self, config: Mapping[str, int]) -> Tensor:
        self.supernet.set_config(config)
        self._count_work(config, 0, len(self._nodes))
        if self.calibration is not None:
            from ..training.calibrate import recalibrate

            recalibrate(self.supernet, self.calibration)
            self.supernet.eval()
            return self.supernet.model(self.images)
        with batch_statistics(self.supernet):
            return self.supernet.model(self.images)

    # -- reuse ------------------------------------------------------------------------------------------

    def _run_reusing(self, current: dict[str, int],
                     candidates: Sequence[tuple[Optional[str], Mapping[str, int]]]) -> list[Tensor]:
        starts = [0 if unit is None else self._start.get(unit, 0) for unit, _ in candidates]
        keep = self._keep_set(set(starts))
        env, done = self._restore(current, keep)
        runner = fx.Interpreter(self.graph_module, garbage_collect_values=False)
        outputs: list[Optional[Tensor]] = [None] * len(candidates)
        with batch_statistics(self.supernet):
            for i in sorted(range(len(candidates)), key=lambda j: starts[j]):
                unit, config = candidates[i]
                start = starts[i]
                if start > done:
                    self.supernet.set_config(current)
                    self._count_work(current, done, start)
                    runner.env = env
                    runner.args_iter = iter([self.images])
                    for node in self._nodes[done:start]:
                        env[node] = runner.run_node(node)
                    done = start
                for node in [n for n in env if self._last_use[n] < start and n not in keep]:
                    del env[node]  # only the tensors crossing a start point are kept
                self.supernet.set_config(config)
                self._count_work(config, start, len(self._nodes))
                initial = dict.fromkeys(self._nodes[:start])
                for node, value in env.items():
                    if self._position[node] < start <= self._last_use[node]:
                        initial[node] = self._frontier(node, value, unit, current, config, start)
                output = fx.Interpreter(self.graph_module, garbage_collect_values=True).run(
                    self.images, initial_env=initial)
                outputs[i] = output
        if keep:
            self._cache = {node: env[node] for node in keep if node in env}
            self._cache_config, self._cache_done = current, done
        else:  # an older cache would miss the start points of the candidates scored since
            self._cache, self._cache_config = {}, None
        return outputs  # type: ignore[return-value]

    def _frontier(self, node: fx.Node, value: object, unit: Optional[str], current: Mapping[str, int],
                  config: Mapping[str, int], start: int):
        """The current network's tensor as the candidate sees it: fewer channels if it carries ``unit``."""
        if not isinstance(value, Tensor):
            return value
        if unit is not None and self._carries(node, unit):
            return self._reslice(node, value, current, config)
        if any(self._position[u] >= start and _in_place(u, self.graph_module) for u in node.users):
            return value.clone()  # the candidate writes into it
        return value

    def _carries(self, node: fx.Node, unit: str) -> bool:
        layout = self._layout_of.get(node)
        return layout is not None and any(u == self._index[unit] for u, _ in layout.segments)

    def _reslice(self, node: fx.Node, value: Tensor, before: Mapping[str, int], after: Mapping[str, int]) -> Tensor:
        """``value``, computed at config ``before``, with the channels config ``after`` keeps (never more).

        Each part of the node's layout keeps a prefix of its channels; the result is contiguous, as the
        candidate's own layers would give it.
        """
        layout = self._layout_of[node]
        units = self.supernet.units
        old = [before.get(units[u].name, units[u].maximum) * scale for u, scale in layout.segments]
        new = [after.get(units[u].name, units[u].maximum) * scale for u, scale in layout.segments]
        if old == new:
            return value
        if len(old) == 1:
            return value.narrow(layout.dim, 0, new[0]).contiguous()
        starts = [sum(old[:i]) for i in range(len(old))]
        index = torch.cat([torch.arange(start, start + count) for start, count in zip(starts, new)])
        return value.index_select(layout.dim, index.to(value.device)).contiguous()

    def _keep_set(self, starts: set[int]) -> set[fx.Node]:
        """Tensors of the current network worth keeping for the next step, if they fit in the cache budget."""
        crossing = {node for node in self._nodes
                    if any(self._position[node] < s <= self._last_use[node] for s in starts)}
        if any(_in_place(user, self.graph_module) for node in crossing for user in node.users):
            return set()  # a cached tensor would be modified in place when the sweep runs again
        batch = len(self.images)
        estimate = 0
        for node in crossing:
            meta = node.meta.get("tensor_meta")
            shape = getattr(meta, "shape", None) or self._traced_shapes.get(node.name)
            if shape is None:
                return set()
            estimate += batch * math.prod(int(d) for d in shape[1:]) * self.images.element_size()
        return crossing if estimate <= self._cache_bytes else set()

    def _restore(self, current: dict[str, int], keep: set[fx.Node]) -> tuple[dict, int]:
        """The cached tensors still valid for ``current``, and how far the current network is computed."""
        if not keep or self._cache_config is None or set(self._cache_config) != set(current):
            return {}, 0
        changed = [u for u in current if current[u] != self._cache_config[u]]
        if any(current[u] > self._cache_config[u] for u in changed):
            return {}, 0
        done = min([self._start.get(u, 0) for u in changed] + [self._cache_done])
        env = {}
        for node, value in self._cache.items():
            if self._position[node] >= done:
                continue
            if isinstance(value, Tensor) and any(self._carries(node, unit) for unit in changed):
                value = self._reslice(node, value, self._cache_config, current)
            env[node] = value
        needed = {node for node in self._nodes if self._position[node] < done <= self._last_use[node]}
        needed |= {node for node in keep if self._position[node] < done}
        if any(node not in env for node in needed):
            return {}, 0  # a start point the cached call did not have (an evaluator scoring fewer candidates then)
        return env, done

    # -- helpers ----------------------------------------------------------------------------------------

    def _score(self, logits: Tensor) -> Score:
        loss = F.cross_entropy(logits.float(), self.labels)
        accuracy = (logits.argmax(1) == self.labels).float().mean()
        return Score(accuracy=float(accuracy), loss=float(loss))

    def _count_work(self, config: Mapping[str, int], low: int, high: int) -> None:
        """Add the work of the calls at graph positions ``low <= position < high``."""
        macs = self.supernet.cost_per_call(config)
        for position, call_macs, weighted in zip(self._call_positions, macs, self._weighted):
            if low <= position < high:
                self.macs_executed += call_macs * len(self.images)
                self.layer_calls += weighted


_IN_PLACE_FUNCTIONS = {"iadd", "isub", "imul", "itruediv"}


def _in_place(node: fx.Node, graph_module: fx.GraphModule) -> bool:
    """Whether ``node`` may write into one of its inputs."""
    if node.op == "call_module":
        return bool(getattr(graph_module.get_submodule(str(node.target)), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return bool(node.kwargs.get("inplace")) or name in _IN_PLACE_FUNCTIONS or name.endswith("_")
    return False
