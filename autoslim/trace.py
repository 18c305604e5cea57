"""Channel units traced from a plain ``nn.Module`` with ``torch.fx`` (AutoSlim section 3.3, US-Nets section 3).

The model is traced at its maximum width and its shapes are propagated with fake tensors (no compute).
Every tensor's channel dimension (dim 1) gets a unit; a union-find merges the units that must be sliced
together:

- conv and linear outputs start a unit; their inputs consume one;
- BatchNorm, elementwise activations, dropout and pooling carry their input's unit;
- a depthwise conv carries its input's unit;
- a residual addition (and any elementwise op of two same-width tensors, such as a squeeze-and-excitation
  gate ``x * gate(x)``) merges the units of its operands;
- global pooling followed by flatten/view/mean carries a unit into the classifier's input.

Anything the tracer cannot prove safe to slice (concatenation, channel shuffle, reshapes that mix channels,
unknown modules or functions) freezes the units involved and records why. The image channels and the
network's outputs are frozen too.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .units import ChannelUnit

__all__ = ["Trace", "LayerCall", "trace_model", "propagate_shapes"]

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
)
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.sigmoid, F.tanh, F.hardtanh, F.softplus, F.dropout, F.dropout2d,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.neg, torch.abs, torch.exp,
    operator.neg, F.relu_, torch.relu_,
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "clip", "contiguous", "clone", "float",
    "half", "bfloat16", "to", "type_as", "detach", "neg", "abs", "exp", "hardswish", "sigmoid",
}
_BINARY = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
    torch.add, torch.mul, torch.sub, torch.div,
}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_FLATTEN = {torch.flatten}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze"}
_MEAN = {torch.mean}


@dataclass
class LayerCall:
    """One call of a slim-able module in the traced graph (a module called twice has two calls)."""

    module: str
    node: str
    kind: str  # "conv", "dwconv" (depthwise: carries its input's unit), "linear", "bn"
    in_unit: int
    out_unit: int
    out_spatial: int  # product of the output's non-channel dims past the batch (H * W; 1 for a linear)


@dataclass
class Trace:
    """What tracing found: the channel units and, per module call, which units it reads and writes.

    Units are referred to by their index in ``units``.
    """

    graph_module: fx.GraphModule
    in_channels: int
    input_size: int
    units: list[ChannelUnit]
    calls: list[LayerCall]
    modules: dict[str, nn.Module] = field(repr=False, default_factory=dict)
    node_units: dict[str, int] = field(repr=False, default_factory=dict)  # graph node name -> unit of its dim 1

    def unit_index(self) -> dict[str, int]:
        return {unit.name: i for i, unit in enumerate(self.units)}

    def spatial_sizes(self, input_size: int) -> list[int]:
        """Output spatial size (H * W) of every call at another input size (fake tensors: no compute)."""
        if input_size == self.input_size:
            return [call.out_spatial for call in self.calls]
        propagate_shapes(self.graph_module, self.in_channels, input_size)  # node shapes now describe input_size
        nodes = {node.name: node for node in self.graph_module.graph.nodes}
        sizes = []
        for call in self.calls:
            shape = _shape(nodes[call.node])
            sizes.append(math.prod(int(s) for s in shape[2:]) if call.kind != "linear" else math.prod(int(s) for s in shape[1:-1]))
        return sizes


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: list[list[str]] = []

    def new(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.reasons.append([reason] if reason else [])
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
        self.reasons[low] += self.reasons[high]
        return low

    def freeze(self, i: int, reason: str) -> None:
        root = self.find(i)
        if reason not in self.reasons[root]:
            self.reasons[root].append(reason)


def _shape(node: Any) -> torch.Size | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if _shape(n) is not None else None)
    return found


def propagate_shapes(graph_module: fx.GraphModule, in_channels: int, input_size: int) -> None:
    """Annotate every node with its output shape at ``input_size`` (fake tensors: no compute)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = graph_module.training
    graph_module.eval()
    try:
        example = torch.zeros(1, in_channels, input_size, input_size)
        ShapeProp(graph_module, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
    finally:
        graph_module.train(was_training)


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types; the user needs one line
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx: {str(error).splitlines()[0]}") from error


def trace_model(model: nn.Module, *, in_channels: int = 3, input_size: int = 224) -> Trace:
    """Trace ``model`` at its maximum width and derive its channel units.

    Args:
        model: a plain module; it is not modified.
        in_channels: image channels of the input.
        input_size: height and width of the example input used to record shapes.

    Returns:
        A :class:`Trace` whose units have names, maxima and frozen reasons but no choices yet.
    """
    was_training = model.training
    model.eval()  # trace the inference graph; aux heads and train-only branches are not slimmed
    try:
        gm = _symbolic_trace(model)
    finally:
        model.train(was_training)
    try:
        propagate_shapes(gm, in_channels, input_size)
    except Exception as error:
        raise ValueError(f"cannot run {type(model).__name__} on a 1x{in_channels}x{input_size}x{input_size} input: "
                         f"{str(error).splitlines()[0]}") from error
    modules = dict(model.named_modules())
    uf = _UnionFind()
    unit_of: dict[fx.Node, int] = {}
    producers: dict[int, list[str]] = {}
    calls: list[tuple[str, str, str, int, int, int]] = []
    origin: dict[int, str] = {}

    def new_unit(size: int, reason: str | None = None, name: str | None = None) -> int:
        uid = uf.new(size, reason)
        if name:
            origin[uid] = name
        return uid

    def channels_of(node: fx.Node) -> int:
        shape = _shape(node)
        return int(shape[1]) if shape is not None and len(shape) >= 2 else 1

    def unit(node: fx.Node) -> int:
        if node not in unit_of:  # e.g. a tensor from a get_attr
            unit_of[node] = new_unit(channels_of(node), f"tensor {node.name} not produced by a traced layer", node.name)
        return unit_of[node]

    def freeze_all(node: fx.Node, reason: str) -> None:
        for arg in _tensor_args(node):
            uf.freeze(unit(arg), reason)
        shape = _shape(node)
        if shape is not None:
            unit_of[node] = new_unit(channels_of(node), reason, node.name)

    for node in gm.graph.nodes:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is not None:
                unit_of[node] = new_unit(channels_of(node), "image channels", "input")
            continue
        if node.op == "output":
            for arg in _tensor_args(node):
                uf.freeze(unit(arg), "network outputs")
            continue
        if shape is None:
            continue  # sizes, attributes, tuples: no channels of their own
        args = _tensor_args(node)
        if node.op == "get_attr":
            unit_of[node] = new_unit(channels_of(node), f"parameter {node.target} used directly", node.name)
        elif node.op == "call_module":
            name = str(node.target)
            module = modules[name]
            kind = type(module)
            if kind is nn.Conv2d and len(args) == 1:
                source = unit(args[0])
                dw = module.groups > 1 and module.groups == module.in_channels == module.out_channels
                if dw:
                    unit_of[node] = source
                    calls.append((name, node.name, "dwconv", source, source, shape[2] * shape[3]))
                    continue
                out = new_unit(module.out_channels, name=name)
                producers.setdefault(out, []).append(name)
                if module.groups > 1:
                    reason = f"grouped conv {name} (groups={module.groups})"
                    uf.freeze(source, reason)
                    uf.freeze(out, reason)
                unit_of[node] = out
                calls.append((name, node.name, "conv", source, out, shape[2] * shape[3]))
            elif kind is nn.Linear and len(args) == 1:
                source = unit(args[0])
                out = new_unit(module.out_features, name=name)
                producers.setdefault(out, []).append(name)
                if len(_shape(args[0])) != 2:
                    reason = f"linear {name} applied to a {len(_shape(args[0]))}-d tensor"
                    uf.freeze(source, reason)
                    uf.freeze(out, reason)
                unit_of[node] = out
                calls.append((name, node.name, "linear", source, out, 1))
            elif kind is nn.BatchNorm2d and len(args) == 1:
                unit_of[node] = unit(args[0])
                calls.append((name, node.name, "bn", unit_of[node], unit_of[node], shape[2] * shape[3]))
            elif isinstance(module, _ELEMENTWISE_MODULES + _POOL_MODULES) and len(args) == 1 and channels_of(args[0]) == channels_of(node):
                unit_of[node] = unit(args[0])
            elif isinstance(module, nn.Flatten) and len(args) == 1 and _flattens_pooled(args[0], node):
                unit_of[node] = unit(args[0])
            else:
                freeze_all(node, f"unsupported module {kind.__name__} at {name}")
        elif node.op in ("call_function", "call_method"):
            target = node.target
            label = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            if target in _BINARY or target in _BINARY_METHODS:
                _binary(node, args, unit, unit_of, uf, channels_of, freeze_all)
            elif (target in _ELEMENTWISE_FUNCTIONS or target in _ELEMENTWISE_METHODS) and len(args) == 1 \
                    and channels_of(args[0]) == channels_of(node) and len(_shape(args[0])) == len(shape):
                unit_of[node] = unit(args[0])
            elif (target in _FLATTEN or target in _RESHAPE_METHODS) and len(args) == 1 and _flattens_pooled(args[0], node):
                unit_of[node] = unit(args[0])
            elif (target in _MEAN or target == "mean") and len(args) == 1 and _keeps_channels(args[0], node):
                unit_of[node] = unit(args[0])
            elif target in (torch.cat, torch.concat, torch.concatenate):
                freeze_all(node, f"concatenation {node.name}")
            else:
                freeze_all(node, f"unsupported operation {label} ({node.name})")
        else:
            freeze_all(node, f"unsupported node {node.op} {node.name}")

    return _collect(gm, uf, producers, origin, calls, modules, in_channels, input_size, unit_of)


def _flattens_pooled(source: fx.Node, node: fx.Node) -> bool:
    """True when ``node`` turns an (N, C, 1, 1) or (N, C) tensor into (N, C) without naming C literally."""
    before, after = _shape(source), _shape(node)
    if before is None or after is None or len(after) != 2 or len(before) < 2:
        return False
    if any(int(s) != 1 for s in before[2:]) or int(after[1]) != int(before[1]):
        return False
    channels = int(before[1])
    literals = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if isinstance(a, int)]
    return channels == 1 or channels not in literals


def _keeps_channels(source: fx.Node, node: fx.Node) -> bool:
    """True for a reduction (``mean``) over spatial dims that keeps dim 1."""
    before, after = _shape(source), _shape(node)
    if before is None or after is None or len(after) < 2 or int(after[1]) != int(before[1]):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if not dims:
        return False
    return all(isinstance(d, int) and d % len(before) >= 2 for d in dims)


def _binary(node, args, unit, unit_of, uf, channels_of, freeze_all) -> None:
    """Elementwise op of two tensors: same channel count merges the units; a 1-channel operand broadcasts."""
    shape = _shape(node)
    if len(args) == 1:
        if len(_shape(args[0])) == len(shape) and channels_of(args[0]) == channels_of(node):
            unit_of[node] = unit(args[0])
            return
        freeze_all(node, f"broadcast in {node.name}")
        return
    if len(args) != 2 or any(len(_shape(a)) != len(shape) for a in args):
        freeze_all(node, f"elementwise op {node.name} with operands of different rank")
        return
    a, b = args
    ca, cb, c = channels_of(a), channels_of(b), channels_of(node)
    if ca == cb == c:
        unit_of[node] = uf.union(unit(a), unit(b))
    elif ca == c and cb == 1:
        unit_of[node] = unit(a)
    elif cb == c and ca == 1:
        unit_of[node] = unit(b)
    else:
        freeze_all(node, f"elementwise op {node.name} broadcasts channels")


def _collect(gm, uf, producers, origin, raw_calls, modules, in_channels, input_size, unit_of) -> Trace:
    roots: dict[int, int] = {}
    units: list[ChannelUnit] = []

    def index(uid: int) -> int:
        root = uf.find(uid)
        if root not in roots:
            roots[root] = len(units)
            units.append(ChannelUnit(name="", maximum=uf.size[root]))
        return roots[root]

    for uid in range(len(uf.parent)):  # units in graph order
        index(uid)
    for uid in sorted(producers):  # producers in graph order: the first names the unit
        units_index = index(uid)
        units[units_index].producers.extend(producers[uid])
    calls: list[LayerCall] = []
    for name, node_name, kind, in_uid, out_uid, spatial in raw_calls:
        i, o = index(in_uid), index(out_uid)
        calls.append(LayerCall(name, node_name, kind, i, o, int(spatial)))
        if kind in ("bn", "dwconv"):
            units[o].carriers.append(name)
        else:
            units[i].consumers.append(name)
    for root, i in roots.items():
        unit = units[i]
        reasons = uf.reasons[root]
        unit.frozen = "; ".join(reasons) if reasons else None
        if unit.producers:
            unit.name = unit.producers[0]
        else:
            members = [u for u in origin if uf.find(u) == root]
            unit.name = origin[min(members)] if members else f"unit{i}"
        for attr in ("producers", "consumers", "carriers"):
            setattr(unit, attr, list(dict.fromkeys(getattr(unit, attr))))
    _dedupe_names(units)
    node_units = {node.name: index(uid) for node, uid in unit_of.items()}
    return Trace(gm, in_channels, input_size, units, calls, modules, node_units)


def _dedupe_names(units: list[ChannelUnit]) -> None:
    seen: dict[str, int] = {}
    for unit in units:
        if unit.name in seen:
            seen[unit.name] += 1
            unit.name = f"{unit.name}#{seen[unit.name]}"
        else:
            seen[unit.name] = 0
