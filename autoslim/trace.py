"""Channel units traced from a plain ``nn.Module`` with ``torch.fx`` (AutoSlim section 3.3, US-Nets section 3).

The model is traced at its maximum width and its shapes are propagated with fake tensors (no compute).
Every tensor gets a *layout*: which dimension holds its channels (1, or the last one after a permute to
channels-last) and the channel units it is made of, in order, each with a *scale* (a flattened
``C x H x W`` tensor holds ``H * W`` features per channel). A union-find merges the units that must be
sliced together:

- conv and linear outputs start a unit; their inputs consume the units of their input's layout;
- BatchNorm, elementwise activations, dropout, stochastic depth and pooling carry their input's layout;
- a depthwise conv, and any grouped conv with as many outputs as inputs (ResNeXt, RegNet), carries its
  input's unit, whose counts must then be multiples of the group width;
- a residual addition (and any elementwise op of two same-width tensors, such as a squeeze-and-excitation
  gate ``x * gate(x)``) merges the units of its operands;
- a concatenation along the channels concatenates its operands' layouts: each part stays its own unit, and
  the layers that read the result read a prefix of every part (DenseNet, Inception, SqueezeNet);
- a flatten of ``(N, C, H, W)`` to ``(N, C*H*W)`` keeps the units, scaled by ``H * W``; a permute moves the
  channel dimension (ConvNeXt's channels-last MLP).

Anything the tracer cannot prove safe to slice (channel shuffle and other reshapes that mix channels,
splits along the channels, LayerNorm over the channels, parameters used directly in arithmetic, unknown
modules or functions) freezes the units involved and records why. The image channels and the network's
outputs are frozen too.

Layers that run only in training mode (auxiliary classifiers of GoogLeNet and Inception v3) are found by
tracing the training-mode graph as well: they become slim layers tied to the same units, but their
multiply-adds are not part of the network's cost, which is that of inference.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .slim import is_layer_norm_2d
from .units import ChannelUnit

__all__ = ["Trace", "LayerCall", "Layout", "ParameterUse", "Segment", "input_count", "trace_model", "propagate_shapes",
           "symbolic_trace"]

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.PReLU,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
)
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Upsample)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.sigmoid, F.tanh, F.hardtanh, F.softplus, F.dropout, F.dropout2d,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.neg, torch.abs, torch.exp,
    operator.neg, F.relu_, torch.relu_,
}
_POOL_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, F.interpolate}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "clip", "contiguous", "clone", "float",
    "half", "bfloat16", "to", "type_as", "detach", "neg", "abs", "exp", "hardswish",
}
# Functions that keep shapes and act per element or per sample, known by name (torchvision wraps them for fx).
_ELEMENTWISE_NAMES = {"stochastic_depth"}
_BINARY = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
    torch.add, torch.mul, torch.sub, torch.div,
}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_FLATTEN = {torch.flatten}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze"}
_MEAN = {torch.mean}
_PERMUTE = {torch.permute}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_SPLITS = {torch.chunk, torch.split, torch.unbind, torch.tensor_split, "chunk", "split", "unbind", "tensor_split"}
_SHAPE_QUERIES = {"size", "dim", "numel"}
# Functional layers that a module's own forward may call on its parameters, with their argument names.
_FUNCTIONAL = {
    F.batch_norm: ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
    F.group_norm: ("input", "num_groups", "weight", "bias", "eps"),
    F.linear: ("input", "weight", "bias"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
}

Segment = tuple[int, int]  # (unit, scale): ``scale`` features per channel of the unit


def input_count(inputs: tuple[Segment, ...], counts: Sequence[int]) -> int:
    """Channels (features) of a tensor made of ``inputs`` at per-unit ``counts``."""
    if len(inputs) == 1:
        return counts[inputs[0][0]] * inputs[0][1]
    return sum(counts[u] * scale for u, scale in inputs)


@dataclass(frozen=True)
class Layout:
    """Where a tensor's channels are and which units they are made of, in order."""

    dim: int  # the channel dimension (1, or the last one for channels-last tensors)
    segments: tuple[Segment, ...]


@dataclass
class LayerCall:
    """One call of a slim-able module in the traced graph (a module called twice has two calls).

    ``inputs`` are the units (with scales) of its input's channels, in order; ``outputs`` those of its output
    (a conv or linear layer starts one unit; BatchNorm and depthwise convs carry their input's).
    """

    module: str
    node: str
    kind: str  # "conv", "dwconv" (grouped conv carrying its input's unit), "linear", "bn"
    inputs: tuple[Segment, ...]
    outputs: tuple[Segment, ...]
    out_spatial: int  # product of the output's non-channel dims past the batch (H * W; 1 for a linear on vectors)
    train_only: bool = False  # runs only in training mode (auxiliary heads): no part of the inference cost
    functional: bool = False  # the module's own forward calls the op on its parameters: sliced as ParameterUse

    @property
    def out_unit(self) -> int:
        """The unit a conv or linear layer starts (for BatchNorm and depthwise convs: their input's first part)."""
        return self.outputs[0][0]


@dataclass(frozen=True)
class ParameterUse:
    """A parameter or buffer that ``forward`` uses directly, sliced by attribute access along the channel units of
    some of its dimensions: ConvNeXt's layer scale (``self.gamma * x``), the statistics and affine parameters of a
    norm layer calling ``F.batch_norm`` itself (timm's ``BatchNormAct2d``), the weight of a layer calling
    ``F.linear`` or ``F.conv2d`` itself."""

    owner: str  # the module holding it
    name: str  # its attribute name
    dims: tuple[tuple[int, tuple[Segment, ...]], ...]  # (dimension, the units along it, in order)
    buffer: bool = False  # a buffer (running statistics): not a parameter of the cost


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
    node_layouts: dict[str, Layout] = field(repr=False, default_factory=dict)  # inference graph node -> layout
    train_error: str | None = None  # why the training-mode graph could not be analysed (it has train-only layers)
    parameters: list[ParameterUse] = field(default_factory=list)

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
            if call.train_only:
                sizes.append(0)
                continue
            shape = _shape(nodes[call.node])
            sizes.append(_positions(shape, call.kind))
        return sizes


def _positions(shape: torch.Size, kind: str) -> int:
    """Output positions per sample of a layer call: H * W for a conv, the non-feature dims for a linear."""
    if kind == "linear":
        return math.prod(int(s) for s in shape[1:-1])
    return math.prod(int(s) for s in shape[2:])


class _UnionFind:
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


def _shape(node: Any) -> torch.Size | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if _shape(n) is not None else None)
    return found


def propagate_shapes(graph_module: fx.GraphModule, in_channels: int, input_size: int, batch: int = 1) -> None:
    """Annotate every node with its output shape at ``input_size`` (fake tensors: no compute)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = graph_module.training
    graph_module.eval()
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, logger.disabled = logger.disabled, True  # on a failed shape check both log a traceback: the
    try:                                               # caller turns the error into one line instead
        example = torch.zeros(batch, in_channels, input_size, input_size)
        with contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(graph_module, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
    finally:
        logger.disabled = disabled
        graph_module.train(was_training)


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer, keeping torchvision's ``LayerNorm2d`` as one module (a LayerNorm over the channels)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from .slim import SlimLayerNorm, is_layer_norm_2d

        return is_layer_norm_2d(m) or isinstance(m, SlimLayerNorm) or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module, tracer: fx.Tracer | None = None) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with autoslim's leaf modules."""
    tracer = tracer or _LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, model.__class__.__name__)


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return symbolic_trace(model)
    except Exception as error:  # fx raises many types; the user needs one line
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx: {str(error).splitlines()[0]}") from error


_TRANSFORMER_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def _refuse_transformers(model: nn.Module) -> None:
    name = type(model).__name__
    if any(isinstance(m, _TRANSFORMER_TYPES) for m in model.modules()) or "VisionTransformer" in name \
            or "SwinTransformer" in name or name in ("MaxVit",):
        raise ValueError(f"{name} is a transformer: autoslim slims the channels of convolutional networks "
                         "(attention heads and token dimensions are not channel units)")


def _label(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _where(node: fx.Node) -> str:
    """The innermost module a node was traced in (``features.2.branch2``), or its node name at the top level."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()), ("", None))[0] if stack else ""
    return path or node.name


class _Tracer:
    """Derives layouts and units from one or more graphs of the same model (inference, then training mode)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.uf = _UnionFind()
        self.layouts: dict[fx.Node, Layout] = {}
        self.producers: dict[int, list[str]] = {}
        self.origin: dict[int, str] = {}
        self.calls: list[dict] = []
        self.module_io: dict[str, tuple[Layout, Layout]] = {}  # first call of each slim-able module
        self.input_unit: Optional[int] = None
        self.untyped_reasons: dict[fx.Node, str] = {}  # why the parts of a split are frozen
        self.parameters: dict[str, dict[int, tuple[Segment, ...]]] = {}  # target -> {dim: units along it}

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
        shape = _shape(node)
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
        args = _tensor_args(node)
        for arg in args:
            self.freeze(self.layout(arg), reason)
        shape = _shape(node)
        if shape is not None:  # keep the channel dim of a same-rank operand (a channels-last LayerNorm)
            dim = next((self.layout(a).dim for a in args if len(_shape(a)) == len(shape)), None)
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
        before, after = _shape(source), _shape(node)
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
                self.freeze_all(node, f"cannot analyse in {_where(node)}: {type(error).__name__}")

    def visit(self, node: fx.Node) -> None:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is not None:
                if self.input_unit is None:
                    self.input_unit = self.new_unit(int(shape[1]) if len(shape) > 1 else 1, "image channels", "input")
                self.layouts[node] = Layout(1, ((self.input_unit, 1),))
            return
        if node.op == "output":
            for arg in _tensor_args(node):
                self.freeze(self.layout(arg), "network outputs")
            return
        if shape is None:
            self.visit_untyped(node)
            return
        args = _tensor_args(node)
        if node.op == "get_attr":
            self.layouts[node] = self.fresh(node, f"parameter {node.target} used directly")
        elif node.op == "call_module":
            self.visit_module(node, args)
        elif node.op in ("call_function", "call_method"):
            self.visit_function(node, args)
        else:
            self.freeze_all(node, f"unsupported node {node.op} in {_where(node)}")

    def visit_untyped(self, node: fx.Node) -> None:
        """Nodes without a tensor output: shape queries are harmless, splits and the like are not."""
        if node.op in ("call_function", "call_method") and node.target in _SHAPE_QUERIES:
            return
        if node.op == "call_function" and node.target is getattr:
            return
        args = _tensor_args(node)
        if not args:
            return
        if isinstance(node.target, type) and issubclass(node.target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            reason = "network outputs"
        elif node.target in _SPLITS:
            reason = f"split along the channels ({_label(node.target)} in {_where(node)})"
        else:
            reason = f"unsupported operation {_label(node.target)} (in {_where(node)})"
        for arg in args:
            self.freeze(self.layout(arg), reason)
        self.untyped_reasons[node] = reason

    def record(self, name: str, node: fx.Node, kind: str, inputs: Layout, outputs: Layout,
               functional: bool = False) -> None:
        """One call of a slim-able module; a module seen before (other call, other graph) keeps its units."""
        if name in self.module_io:
            first_in, first_out = self.module_io[name]
            reason = f"module {name} called on tensors of different channels"
            self.tie(first_in, inputs, reason)
            if kind in ("conv", "linear"):
                self.tie(first_out, outputs, reason)
            if self.train_pass:
                return  # already a call of the inference graph
        else:
            self.module_io[name] = (inputs, outputs)
        shape = _shape(node)
        self.calls.append(dict(module=name, node=node.name, kind=kind, inputs=inputs.segments, outputs=outputs.segments,
                               out_spatial=_positions(shape, kind), train_only=self.train_pass, functional=functional))

    def visit_module(self, node: fx.Node, args: list[fx.Node]) -> None:
        name = str(node.target)
        module = self.modules[name]
        kind = type(module)
        shape = _shape(node)
        source = self.layout(args[0]) if len(args) == 1 else None
        if kind is nn.Conv2d and source is not None and source.dim == 1:
            if module.groups > 1 and module.in_channels == module.out_channels:
                # depthwise or ResNeXt/RegNet-style grouped conv: carries its input's unit, in whole groups
                width = module.in_channels // module.groups
                if len(source.segments) != 1:
                    self.freeze(source, f"grouped conv {name} reads a concatenation")
                else:
                    self.uf.require_multiple(source.segments[0][0], width)
                self.layouts[node] = source
                self.record(name, node, "dwconv", source, source)
                return
            out = self.new_unit(module.out_channels, name=name)
            self.producers.setdefault(out, []).append(name)
            result = Layout(1, ((out, 1),))
            if module.groups > 1:
                reason = f"grouped conv {name} (groups={module.groups}) with {module.in_channels} inputs " \
                         f"and {module.out_channels} outputs"
                self.freeze(source, reason)
                self.uf.freeze(out, reason)
            self.layouts[node] = result
            self.record(name, node, "conv", source, result)
        elif kind is nn.Linear and source is not None:
            out = self.new_unit(module.out_features, name=name)
            self.producers.setdefault(out, []).append(name)
            result = Layout(len(shape) - 1, ((out, 1),))
            if source.dim != len(_shape(args[0])) - 1:
                reason = f"linear {name} acts on a dimension that is not the channels"
                self.freeze(source, reason)
                self.uf.freeze(out, reason)
            self.layouts[node] = result
            self.record(name, node, "linear", source, result)
        elif kind is nn.BatchNorm2d and source is not None and source.dim == 1:
            self.layouts[node] = source
            self.record(name, node, "bn", source, source)
        elif (kind is nn.LayerNorm or is_layer_norm_2d(module)) and source is not None and self.carries(args[0], node):
            rank = len(_shape(args[0]))
            channel_dim = 1 if is_layer_norm_2d(module) else rank - 1
            if tuple(module.normalized_shape) != (self.count(source),) or source.dim != channel_dim:
                self.freeze(source, f"LayerNorm {name} normalises over more than the channels")
            elif len(source.segments) != 1 or source.segments[0][1] != 1:
                self.freeze(source, f"LayerNorm {name} normalises a concatenation")
            self.layouts[node] = source
            self.record(name, node, "ln", source, source)
        elif isinstance(module, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm)) and source is not None \
                and source.dim == 1 and self.carries(args[0], node):
            # a norm layer torch keeps whole (GroupNorm, SyncBatchNorm): its per-channel tensors are sliced
            if isinstance(module, nn.GroupNorm):
                if len(source.segments) != 1 or source.segments[0][1] != 1:
                    self.freeze(source, f"GroupNorm {name} normalises a concatenation")
                else:
                    self.uf.require_multiple(source.segments[0][0], module.num_groups)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, attr, None) is not None:
                    self.use_parameter(f"{name}.{attr}", {0: source.segments})
            self.layouts[node] = source
        elif isinstance(module, _ELEMENTWISE_MODULES) and source is not None and self.carries(args[0], node):
            if isinstance(module, nn.PReLU) and module.num_parameters > 1:
                self.freeze(source, f"PReLU {name} has a parameter per channel")
            self.layouts[node] = source
        elif isinstance(module, _POOL_MODULES) and source is not None and source.dim == 1 and self.carries(args[0], node):
            self.layouts[node] = source
        elif isinstance(module, nn.Flatten) and source is not None and self.flatten(node, args[0]):
            pass
        else:
            self.freeze_all(node, f"unsupported module {kind.__name__} at {name}")

    def visit_function(self, node: fx.Node, args: list[fx.Node]) -> None:
        target = node.target
        label = _label(target)
        if target in _FUNCTIONAL and self.functional(node):
            pass
        elif target in _BINARY or target in _BINARY_METHODS:
            self.binary(node, args)
        elif (target in _ELEMENTWISE_FUNCTIONS or target in _ELEMENTWISE_METHODS or label in _ELEMENTWISE_NAMES) \
                and len(args) == 1 and self.carries(args[0], node):
            self.layouts[node] = self.layout(args[0])
        elif target in _POOL_FUNCTIONS and len(args) == 1 and self.layout(args[0]).dim == 1 and self.carries(args[0], node):
            self.layouts[node] = self.layout(args[0])
        elif (target in _FLATTEN or target in _RESHAPE_METHODS) and len(args) == 1 and self.flatten(node, args[0]):
            pass
        elif target in _FLATTEN or target in _RESHAPE_METHODS or target in ("transpose", torch.transpose):
            self.freeze_all(node, f"{label} in {_where(node)} mixes the channels with other dims (channel shuffle)")
        elif (target in _MEAN or target == "mean") and len(args) == 1 and self.keeps_channels(args[0], node):
            self.layouts[node] = self.layout(args[0])
        elif (target in _PERMUTE or target == "permute") and len(args) == 1:
            self.permute(node, args[0])
        elif target in _CAT:
            self.concatenate(node, args)
        elif isinstance(target, type) and issubclass(target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            for arg in args:
                self.freeze(self.layout(arg), "network outputs")
        elif target is operator.getitem and not args:
            source = node.args[0]
            self.layouts[node] = self.fresh(node, self.untyped_reasons.get(source, f"part of {_label(source)}"))
        else:
            self.freeze_all(node, f"unsupported operation {label} (in {_where(node)})")

    # -- patterns -------------------------------------------------------------------------------------------

    def binary(self, node: fx.Node, args: list[fx.Node]) -> None:
        """Elementwise op of two tensors: same layout merges the units; a 1-channel operand broadcasts."""
        shape = _shape(node)
        if len(args) == 1:
            if self.carries(args[0], node):
                self.layouts[node] = self.layout(args[0])
            else:
                self.freeze_all(node, f"broadcast in in {_where(node)}")
            return
        if len(args) != 2:
            self.freeze_all(node, f"elementwise op in {_where(node)} of {len(args)} tensors")
            return
        params = [a for a in args if a.op == "get_attr"]
        if len(params) == 1 and self.module_tensor(params[0]) and self.per_channel_parameter(node, params[0], next(a for a in args if a is not params[0])):
            return
        if params:
            self.freeze_all(node, f"parameter {params[0].target} used directly in arithmetic")
            return
        if any(len(_shape(a)) != len(shape) for a in args):
            self.freeze_all(node, f"elementwise op in {_where(node)} with operands of different rank")
            return
        a, b = (self.layout(x) for x in args)
        ca, cb, c = (int(_shape(x)[a.dim]) for x in (args[0], args[1], node))
        if a.dim != b.dim:
            self.freeze_all(node, f"elementwise op in {_where(node)} of tensors with channels in different dims")
        elif ca == cb == c:
            self.layouts[node] = self.tie(a, b, f"elementwise op in {_where(node)} of differently concatenated tensors")
        elif ca == c and cb == 1:
            self.layouts[node] = a
        elif cb == c and ca == 1:
            self.layouts[node] = b
        else:
            self.freeze_all(node, f"elementwise op in {_where(node)} broadcasts channels")

    def per_channel_parameter(self, node: fx.Node, param: fx.Node, other: fx.Node) -> bool:
        """``parameter * x`` with one value per channel of ``x`` (ConvNeXt's layer scale): the parameter is sliced
        with x's unit. False for any other broadcast."""
        shape, pshape, xshape = _shape(node), _shape(param), _shape(other)
        layout = self.layout(other)
        if shape is None or pshape is None or xshape is None or len(pshape) > len(xshape) or len(shape) != len(xshape):
            return False
        if len(layout.segments) != 1 or layout.segments[0][1] != 1:
            return False
        dim = layout.dim - (len(xshape) - len(pshape))
        channels = int(xshape[layout.dim])
        if dim < 0 or int(pshape[dim]) != channels or int(shape[layout.dim]) != channels:
            return False
        if any(int(s) != 1 for i, s in enumerate(pshape) if i != dim) or tuple(shape) != tuple(xshape):
            return False
        self.use_parameter(str(param.target), {dim: layout.segments})
        self.layouts[node] = layout
        return True

    def module_tensor(self, node: fx.Node) -> bool:
        """Whether ``node`` reads a parameter or buffer of a module (not a constant made while tracing)."""
        owner, _, name = str(node.target).rpartition(".")
        module = self.modules.get(owner)
        return node.op == "get_attr" and module is not None and (name in module._parameters or name in module._buffers)

    def use_parameter(self, target: str, dims: dict[int, tuple[Segment, ...]]) -> None:
        """A parameter or buffer used directly, sliced along ``dims`` with those units (tied to earlier uses)."""
        known = self.parameters.setdefault(target, {})
        for dim, segments in dims.items():
            if dim in known:
                known[dim] = self.tie(Layout(1, known[dim]), Layout(1, segments),
                                      f"parameter {target} used with tensors of different channels").segments
            else:
                known[dim] = segments

    def functional(self, node: fx.Node) -> bool:
        """A functional conv, linear or norm whose weights are module attributes (a layer subclass with its own
        forward, such as timm's ``BatchNormAct2d`` or ``Linear``): the same rule as the module, its parameters
        and buffers sliced by attribute. False when the call is not of that form."""
        names = _FUNCTIONAL.get(node.target)
        if names is None:
            return False
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        x = bound.get("input")
        tensors = {k: v for k, v in bound.items() if k != "input" and isinstance(v, fx.Node)}
        if not isinstance(x, fx.Node) or _shape(x) is None or not tensors \
                or any(not self.module_tensor(v) or _shape(v) is None for v in tensors.values()):
            return False
        owners = {str(v.target).rpartition(".")[0] for v in tensors.values()}
        if len(owners) != 1:
            return False
        owner = owners.pop()
        source, shape = self.layout(x), _shape(node)
        label = _label(node.target)
        if label in ("batch_norm", "group_norm"):
            if source.dim != 1 or not self.carries(x, node):
                return False
            channels = int(_shape(x)[1])
            if any(tuple(_shape(v)) != (channels,) for v in tensors.values()):
                return False
            if label == "group_norm":
                groups = bound.get("num_groups")
                if not isinstance(groups, int):
                    return False
                if len(source.segments) != 1 or source.segments[0][1] != 1:
                    self.freeze(source, f"group norm in {_where(node)} normalises a concatenation")
                else:
                    self.uf.require_multiple(source.segments[0][0], groups)
            for v in tensors.values():
                self.use_parameter(str(v.target), {0: source.segments})
            self.layouts[node] = source
            return True
        weight = tensors.get("weight")
        if weight is None:
            return False
        wshape = _shape(weight)
        rank = len(_shape(x))
        if label == "linear":
            if len(wshape) != 2 or source.dim != rank - 1 or int(wshape[1]) != int(_shape(x)[-1]):
                return False
        elif source.dim != 1 or len(wshape) != 4 or not isinstance(self.modules.get(owner), nn.Conv2d):
            return False
        elif bound.get("groups", 1) != 1 or int(wshape[1]) != int(_shape(x)[1]):
            self.freeze_all(node, f"grouped conv computed by {owner}'s own forward")
            return True
        out = self.new_unit(int(wshape[0]), name=owner)
        self.producers.setdefault(out, []).append(owner)
        result = Layout(len(shape) - 1 if label == "linear" else 1, ((out, 1),))
        self.use_parameter(str(weight.target), {0: result.segments, 1: source.segments})
        if isinstance(bound.get("bias"), fx.Node):
            self.use_parameter(str(bound["bias"].target), {0: result.segments})
        self.layouts[node] = result
        self.record(owner, node, "linear" if label == "linear" else "conv", source, result, functional=True)
        return True

    def flatten(self, node: fx.Node, source: fx.Node) -> bool:
        """``(N, C, H, W) -> (N, C*H*W)`` (channel-major: a prefix of channels is a prefix of features)."""
        before, after = _shape(source), _shape(node)
        layout = self.layout(source)
        if before is None or after is None or len(after) != 2 or len(before) < 2 or layout.dim != 1:
            return False
        spatial = math.prod(int(s) for s in before[2:])
        if int(after[1]) != int(before[1]) * spatial:
            return False
        values = list(node.args[1:]) + list(node.kwargs.values())
        values += [v for a in values if isinstance(a, (tuple, list)) for v in a]
        literals = [a for a in values if isinstance(a, int)]
        if int(after[1]) > 1 and int(after[1]) in literals or int(before[1]) > 1 and int(before[1]) in literals:
            return False  # names the channel count: would break at another width
        self.layouts[node] = Layout(1, tuple((u, s * spatial) for u, s in layout.segments))
        return True

    def keeps_channels(self, source: fx.Node, node: fx.Node) -> bool:
        """True for a reduction (``mean``) over spatial dims that keeps dim 1."""
        before, after = _shape(source), _shape(node)
        if before is None or after is None or len(after) < 2 or int(after[1]) != int(before[1]):
            return False
        if self.layout(source).dim != 1:
            return False
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if not dims:
            return False
        return all(isinstance(d, int) and d % len(before) >= 2 for d in dims)

    def permute(self, node: fx.Node, source: fx.Node) -> None:
        rank = len(_shape(source))
        dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
        if node.op == "call_function" and not dims:
            dims = (node.kwargs.get("dims"),)
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if not all(isinstance(d, int) for d in dims) or len(dims) != rank:
            self.freeze_all(node, f"permute in {_where(node)} with dims not known when tracing")
            return
        layout = self.layout(source)
        order = [d % rank for d in dims]
        self.layouts[node] = Layout(order.index(layout.dim), layout.segments)

    def concatenate(self, node: fx.Node, args: list[fx.Node]) -> None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        layouts = [self.layout(a) for a in args]
        rank = len(_shape(node))
        if not isinstance(dim, int) or not layouts or any(l.dim != dim % rank for l in layouts) \
                or any(len(_shape(a)) != rank for a in args):
            self.freeze_all(node, f"concatenation in {_where(node)} along a dimension that is not the channels")
            return
        self.layouts[node] = Layout(layouts[0].dim, tuple(s for l in layouts for s in l.segments))


def trace_model(model: nn.Module, *, in_channels: int = 3, input_size: int = 224) -> Trace:
    """Trace ``model`` at its maximum width and derive its channel units.

    Args:
        model: a plain module; it is not modified.
        in_channels: image channels of the input.
        input_size: height and width of the example input used to record shapes.

    Returns:
        A :class:`Trace` whose units have names, maxima and frozen reasons but no choices yet.

    Raises:
        ValueError: the model is a transformer, or cannot be traced or run at this input size.
    """
    _refuse_transformers(model)
    was_training = model.training
    try:
        model.eval()  # the inference graph defines the units and the cost
        gm = _symbolic_trace(model)
        model.train()  # the training graph adds train-only layers (auxiliary heads)
        try:
            train_gm = symbolic_trace(model)
        except Exception:  # a model that traces only in eval mode: no train-only layers are known
            train_gm = None
    finally:
        model.train(was_training)
    try:
        propagate_shapes(gm, in_channels, input_size)
    except Exception as error:
        raise ValueError(f"cannot run {type(model).__name__} on a 1x{in_channels}x{input_size}x{input_size} input: "
                         f"{str(error).splitlines()[0]}") from error
    tracer = _Tracer(dict(model.named_modules()))
    tracer.run(gm)
    eval_layouts = dict(tracer.layouts)
    train_error = None
    if train_gm is not None and _has_train_only_modules(gm, train_gm):
        try:
            propagate_shapes(train_gm, in_channels, input_size, batch=2)
        except Exception as error:
            train_error = (f"{type(model).__name__} cannot run in training mode on {in_channels}x{input_size}x"
                           f"{input_size} inputs (its training-only layers, such as auxiliary heads, need a larger "
                           f"input): {str(error).splitlines()[0]}")
        else:
            tracer.layouts = {}
            tracer.run(train_gm, train_only=True)
    trace = _collect(gm, tracer, in_channels, input_size, eval_layouts)
    trace.train_error = train_error
    return trace


def _has_train_only_modules(gm: fx.GraphModule, train_gm: fx.GraphModule) -> bool:
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    return any(n.op == "call_module" and str(n.target) not in called for n in train_gm.graph.nodes)


def _collect(gm: fx.GraphModule, tracer: _Tracer, in_channels: int, input_size: int,
             layouts: dict[fx.Node, Layout]) -> Trace:
    uf = tracer.uf
    roots: dict[int, int] = {}
    units: list[ChannelUnit] = []

    def index(uid: int) -> int:
        root = uf.find(uid)
        if root not in roots:
            roots[root] = len(units)
            units.append(ChannelUnit(name="", maximum=uf.size[root]))
        return roots[root]

    def segments(parts: tuple[Segment, ...]) -> tuple[Segment, ...]:
        return tuple((index(u), s) for u, s in parts)

    for uid in range(len(uf.parent)):  # units in graph order
        index(uid)
    for uid in sorted(tracer.producers):  # producers in graph order: the first names the unit
        units[index(uid)].producers.extend(tracer.producers[uid])
    calls: list[LayerCall] = []
    for raw in tracer.calls:
        call = LayerCall(raw["module"], raw["node"], raw["kind"], segments(raw["inputs"]), segments(raw["outputs"]),
                         int(raw["out_spatial"]), raw["train_only"], raw["functional"])
        calls.append(call)
        if call.kind in ("bn", "dwconv", "ln"):
            for u, _ in call.outputs:
                units[u].carriers.append(call.module)
        else:
            for u, _ in call.inputs:
                units[u].consumers.append(call.module)
    for root, i in roots.items():
        unit = units[i]
        reasons = uf.reasons[root]
        unit.frozen = "; ".join(reasons) if reasons else None
        unit.multiple = uf.multiple[root]
        if unit.producers:
            unit.name = unit.producers[0]
        else:
            members = [u for u in tracer.origin if uf.find(u) == root]
            unit.name = tracer.origin[min(members)] if members else f"unit{i}"
        for attr in ("producers", "consumers", "carriers"):
            setattr(unit, attr, list(dict.fromkeys(getattr(unit, attr))))
    _dedupe_names(units)
    node_layouts = {node.name: Layout(layout.dim, segments(layout.segments)) for node, layout in layouts.items()}
    parameters = []
    for target, dims in tracer.parameters.items():
        owner, _, name = target.rpartition(".")
        buffer = name in tracer.modules[owner]._buffers
        parameters.append(ParameterUse(owner, name, tuple((d, segments(dims[d])) for d in sorted(dims)), buffer))
        for d in dims:
            for u, _ in segments(dims[d]):
                if owner not in units[u].producers and owner not in units[u].consumers:
                    units[u].carriers.append(owner or target)
    for unit in units:
        unit.carriers = list(dict.fromkeys(unit.carriers))
    return Trace(gm, in_channels, input_size, units, calls, tracer.modules, node_layouts, parameters=parameters)


def _dedupe_names(units: list[ChannelUnit]) -> None:
    seen: dict[str, int] = {}
    for unit in units:
        if unit.name in seen:
            seen[unit.name] += 1
            unit.name = f"{unit.name}#{seen[unit.name]}"
        else:
            seen[unit.name] = 0
