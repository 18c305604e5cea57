"""The bookkeeping of channel tracing: units merged by a union-find, and the layout of every graph node.

:class:`ChannelFlow` holds the state that :class:`autoslim.network.op_rules.OpTracer` fills while it visits a
graph: new units, the layouts of nodes, ties between units that must be sliced together, frozen units, and
the calls of slim-able modules.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.fx as fx
from torch import nn

from .fx_graph import node_shape, positions, tensor_args, where
from .trace_records import Layout, Segment

__all__ = ["UnionFind", "ChannelFlow"]


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: list[list[str]] = []
        self.multiple: list[int] = []

    def new(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.reasons.append([reason] if reason else [])
        self.multiple.append(1)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.size[a] != self.size[b]:
            raise ValueError(f"internal: merging units of {self.size[a]} and {self.size[b]} channels")
        low, high = min(a, b), max(a, b)
        self.parent[high] = low
        self.reasons[low] += [r for r in self.reasons[high] if r not in self.reasons[low]]
        self.multiple[low] = math.lcm(self.multiple[low], self.multiple[high])
        return low

    def freeze(self, i: int, reason: str) -> None:
        root = self.find(i)
        if reason not in self.reasons[root]:
            self.reasons[root].append(reason)

    def require_multiple(self, i: int, multiple: int) -> None:
        root = self.find(i)
        self.multiple[root] = math.lcm(self.multiple[root], multiple)



class ChannelFlow:
    """Derives layouts and units from one or more graphs of the same model (inference, then training mode).

    The op rules live in the subclass :class:`autoslim.network.op_rules.OpTracer` (its ``visit``).
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.uf = UnionFind()
        self.layouts: dict[fx.Node, Layout] = {}
        self.producers: dict[int, list[str]] = {}
        self.origin: dict[int, str] = {}
        self.calls: list[dict] = []
        self.module_io: dict[str, tuple[Layout, Layout]] = {}  # first call of each slim-able module
        self.input_unit: Optional[int] = None
        self.untyped_reasons: dict[fx.Node, str] = {}  # why the parts of a split are frozen
        self.parameters: dict[str, dict[int, tuple[Segment, ...]]] = {}  # target -> {dim: units along it}
        self.parameter_views: dict[fx.Node, tuple[fx.Node, int]] = {}  # reshaped parameter -> (get_attr, its dim)
        self.opaque: list[str] = []  # nodes run whole, their channels frozen: leaf modules, unsupported ops

    # -- units and layouts ---------------------------------------------------------------------------------

    def new_unit(self, size: int, reason: str | None = None, name: str | None = None) -> int:
        uid = self.uf.new(size, reason)
        if name:
            self.origin[uid] = name
        return uid

    @staticmethod
    def channel_dim(shape: torch.Size) -> int:
        return 1 if len(shape) >= 2 else 0

    def fresh(self, node: fx.Node, reason: str | None, name: str | None = None, dim: int | None = None) -> Layout:
        shape = node_shape(node)
        dim = self.channel_dim(shape) if dim is None or dim >= len(shape) else dim
        size = int(shape[dim]) if len(shape) else 1
        return Layout(dim, ((self.new_unit(size, reason, name or node.name), 1),))

    def layout(self, node: fx.Node) -> Layout:
        if node not in self.layouts:  # e.g. a tensor built inside forward
            self.layouts[node] = self.fresh(node, f"tensor {node.name} not produced by a traced layer")
        return self.layouts[node]

    def count(self, layout: Layout) -> int:
        return sum(self.uf.size[self.uf.find(u)] * s for u, s in layout.segments)

    def freeze(self, layout: Layout, reason: str) -> None:
        for u, _ in layout.segments:
            self.uf.freeze(u, reason)

    def freeze_all(self, node: fx.Node, reason: str) -> None:
        args = tensor_args(node)
        for arg in args:
            self.freeze(self.layout(arg), reason)
        shape = node_shape(node)
        if shape is not None:  # keep the channel dim of a same-rank operand (a channels-last LayerNorm)
            dim = next((self.layout(a).dim for a in args if len(node_shape(a)) == len(shape)), None)
            self.layouts[node] = self.fresh(node, reason, dim=dim)

    def tie(self, a: Layout, b: Layout, reason: str) -> Layout:
        """Merge two layouts of the same structure segment by segment; freeze both otherwise."""
        if a.dim == b.dim and len(a.segments) == len(b.segments) and all(
                sa == sb and self.uf.size[self.uf.find(ua)] == self.uf.size[self.uf.find(ub)]
                for (ua, sa), (ub, sb) in zip(a.segments, b.segments)):
            return Layout(a.dim, tuple((self.uf.union(ua, ub), s) for (ua, s), (ub, _) in zip(a.segments, b.segments)))
        self.freeze(a, reason)
        self.freeze(b, reason)
        return a

    def carries(self, source: fx.Node, node: fx.Node) -> bool:
        """Whether ``node`` has ``source``'s rank and channel count along ``source``'s channel dim."""
        before, after = node_shape(source), node_shape(node)
        layout = self.layout(source)
        return (before is not None and after is not None and len(before) == len(after)
                and int(after[layout.dim]) == int(before[layout.dim]))

    # -- graphs ---------------------------------------------------------------------------------------------

    def run(self, gm: fx.GraphModule, *, train_only: bool = False) -> None:
        self.train_pass = train_only
        for node in gm.graph.nodes:
            try:
                self.visit(node)
            except ValueError:
                raise
            except Exception as error:  # a pattern we did not foresee: freeze it rather than fail
                self.freeze_all(node, f"cannot analyse in {where(node)}: {type(error).__name__}")

    def use_parameter(self, target: str, dims: dict[int, tuple[Segment, ...]]) -> None:
        """A parameter or buffer used directly, sliced along ``dims`` with those units (tied to earlier uses)."""
        known = self.parameters.setdefault(target, {})
        for dim, segments in dims.items():
            if dim in known:
                known[dim] = self.tie(Layout(1, known[dim]), Layout(1, segments),
                                      f"parameter {target} used with tensors of different channels").segments
            else:
                known[dim] = segments

    def record(self, name: str, node: fx.Node, kind: str, inputs: Layout, outputs: Layout,
               functional: bool = False) -> None:
        """One call of a slim-able module; a module seen before (other call, other graph) keeps its units."""
        if name in self.module_io:
            first_in, first_out = self.module_io[name]
            reason = f"module {name} called on tensors of different channels"
            if kind != "chconv":  # a conv along the channels holds nothing per channel: any channels may share it
                self.tie(first_in, inputs, reason)
            if kind in ("conv", "linear"):
                self.tie(first_out, outputs, reason)
            if self.train_pass:
                return  # already a call of the inference graph
        else:
            self.module_io[name] = (inputs, outputs)
        shape = node_shape(node)
        self.calls.append(dict(module=name, node=node.name, kind=kind, inputs=inputs.segments, outputs=outputs.segments,
                               out_spatial=positions(shape, kind), train_only=self.train_pass, functional=functional))

