"""The op rules of channel tracing: how each module, function and method maps its inputs' layouts to its output's.

Conv and linear layers start units; BatchNorm, elementwise ops and pooling carry their input's layout; residual
additions tie units; concatenations concatenate layouts; flatten and permute move or scale them; anything else
freezes the units it touches, with the reason (see :mod:`autoslim.network.tracing`).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .channel_flow import ChannelFlow
from .fx_graph import node_shape, target_name, tensor_args, where
from .layers import is_channels_last_layer_norm, is_layer_norm_2d
from .trace_records import Layout

__all__ = ["OpTracer"]


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
_REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}
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


class OpTracer(ChannelFlow):
    """:class:`ChannelFlow` with the op rules: ``visit`` reads one node."""

    def visit(self, node: fx.Node) -> None:
        shape = node_shape(node)
        if node.op == "placeholder":
            if shape is not None:
                if self.input_unit is None:
                    self.input_unit = self.new_unit(int(shape[1]) if len(shape) > 1 else 1, "image channels", "input")
                self.layouts[node] = Layout(1, ((self.input_unit, 1),))
            return
        if node.op == "output":
            for arg in tensor_args(node):
                self.freeze(self.layout(arg), "network outputs")
            return
        if shape is None:
            self.visit_untyped(node)
            return
        args = tensor_args(node)
        if node.op == "get_attr":
            self.layouts[node] = self.fresh(node, f"parameter {node.target} used directly")
        elif node.op == "call_module":
            self.visit_module(node, args)
        elif node.op in ("call_function", "call_method"):
            self.visit_function(node, args)
        else:
            self.freeze_all(node, f"unsupported node {node.op} in {where(node)}")

    def visit_untyped(self, node: fx.Node) -> None:
        """Nodes without a tensor output: shape queries are harmless, splits and the like are not."""
        if node.op in ("call_function", "call_method") and node.target in _SHAPE_QUERIES:
            return
        if node.op == "call_function" and node.target is getattr:
            return
        args = tensor_args(node)
        if not args:
            return
        if isinstance(node.target, type) and issubclass(node.target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            reason = "network outputs"
        elif node.target in _SPLITS:
            reason = f"split along the channels ({target_name(node.target)} in {where(node)})"
        else:
            reason = f"unsupported operation {target_name(node.target)} (in {where(node)})"
        for arg in args:
            self.freeze(self.layout(arg), reason)
        self.untyped_reasons[node] = reason


    def visit_module(self, node: fx.Node, args: list[fx.Node]) -> None:
        name = str(node.target)
        module = self.modules[name]
        kind = type(module)
        shape = node_shape(node)
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
            if source.dim != len(node_shape(args[0])) - 1:
                reason = f"linear {name} acts on a dimension that is not the channels"
                self.freeze(source, reason)
                self.uf.freeze(out, reason)
            self.layouts[node] = result
            self.record(name, node, "linear", source, result)
        elif kind is nn.BatchNorm2d and source is not None and source.dim == 1:
            self.layouts[node] = source
            self.record(name, node, "bn", source, source)
        elif (is_channels_last_layer_norm(module) or is_layer_norm_2d(module)) and source is not None and self.carries(args[0], node):
            rank = len(node_shape(args[0]))
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
        label = target_name(target)
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
        elif target in _RESHAPE_METHODS and len(args) == 1 and self.parameter_view(node, args[0]):
            pass
        elif target in _RESHAPE_METHODS and len(args) == 1 and self.group_split(node, args[0]):
            pass
        elif target in _FLATTEN or target in _RESHAPE_METHODS or target in ("transpose", torch.transpose):
            self.freeze_all(node, f"{label} in {where(node)} mixes the channels with other dims (channel shuffle)")
        elif (target in _REDUCTIONS or target in _REDUCTION_METHODS) and len(args) == 1 and self.reduction(node, args[0]):
            pass
        elif target is operator.getitem and len(args) == 1 and self.index(node, args[0]):
            pass
        elif (target in _PERMUTE or target == "permute") and len(args) == 1:
            self.permute(node, args[0])
        elif target in _CAT:
            self.concatenate(node, args)
        elif isinstance(target, type) and issubclass(target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            for arg in args:
                self.freeze(self.layout(arg), "network outputs")
        elif target is operator.getitem and not args:
            source = node.args[0]
            self.layouts[node] = self.fresh(node, self.untyped_reasons.get(source, f"part of {target_name(source)}"))
        else:
            self.freeze_all(node, f"unsupported operation {label} (in {where(node)})")

    # -- patterns -------------------------------------------------------------------------------------------

    def binary(self, node: fx.Node, args: list[fx.Node]) -> None:
        """Elementwise op of two tensors: same layout merges the units; a 1-channel operand broadcasts."""
        shape = node_shape(node)
        if len(args) == 1:
            if self.carries(args[0], node):
                self.layouts[node] = self.layout(args[0])
            else:
                self.freeze_all(node, f"broadcast in in {where(node)}")
            return
        if len(args) != 2:
            self.freeze_all(node, f"elementwise op in {where(node)} of {len(args)} tensors")
            return
        params = [a for a in args if a.op == "get_attr" or a in self.parameter_views]
        if len(params) == 1 and (params[0] in self.parameter_views or self.module_tensor(params[0])) \
                and self.per_channel_parameter(node, params[0], next(a for a in args if a is not params[0])):
            return
        if params:
            source = self.parameter_views.get(params[0], (params[0],))[0]
            self.freeze_all(node, f"parameter {source.target} used directly in arithmetic")
            return
        if any(len(node_shape(a)) != len(shape) for a in args):
            self.freeze_all(node, f"elementwise op in {where(node)} with operands of different rank")
            return
        a, b = (self.layout(x) for x in args)
        ca, cb, c = (int(node_shape(x)[a.dim]) for x in (args[0], args[1], node))
        if a.dim != b.dim:
            self.freeze_all(node, f"elementwise op in {where(node)} of tensors with channels in different dims")
        elif ca == cb == c:
            self.layouts[node] = self.tie(a, b, f"elementwise op in {where(node)} of differently concatenated tensors")
        elif ca == c and cb == 1:
            self.layouts[node] = a
        elif cb == c and ca == 1:
            self.layouts[node] = b
        else:
            self.freeze_all(node, f"elementwise op in {where(node)} broadcasts channels")

    def per_channel_parameter(self, node: fx.Node, param: fx.Node, other: fx.Node) -> bool:
        """``parameter * x`` with one value per channel of ``x`` (ConvNeXt's layer scale): the parameter is sliced
        with x's unit. False for any other broadcast."""
        shape, pshape, xshape = node_shape(node), node_shape(param), node_shape(other)
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
        if param in self.parameter_views:  # a reshaped parameter: slice the parameter along its own dim
            param, dim = self.parameter_views[param]
        self.use_parameter(str(param.target), {dim: layout.segments})
        self.layouts[node] = layout
        return True

    def parameter_view(self, node: fx.Node, source: fx.Node) -> bool:
        """A module's parameter reshaped to put its one non-trivial dim elsewhere (timm's layer scale,
        ``gamma.reshape(1, -1, 1, 1)``), without naming its size: an arithmetic use may then slice the parameter
        along that dim as it slices a parameter used directly. False for any other reshape."""
        before, after = node_shape(source), node_shape(node)
        if source.op != "get_attr" or not self.module_tensor(source) or before is None or after is None:
            return False
        big_before = [i for i, s in enumerate(before) if int(s) != 1]
        big_after = [i for i, s in enumerate(after) if int(s) != 1]
        if len(big_before) != 1 or len(big_after) != 1:
            return False
        size = int(before[big_before[0]])
        values = list(node.args[1:]) + list(node.kwargs.values())
        values += [v for a in values if isinstance(a, (tuple, list)) for v in a]
        if size in [v for v in values if isinstance(v, int)]:
            return False  # names the channel count: would break at another width
        self.parameter_views[node] = (source, big_before[0])
        self.layouts[node] = self.layout(source)
        return True

    def module_tensor(self, node: fx.Node) -> bool:
        """Whether ``node`` reads a parameter or buffer of a module (not a constant made while tracing)."""
        owner, _, name = str(node.target).rpartition(".")
        module = self.modules.get(owner)
        return node.op == "get_attr" and module is not None and (name in module._parameters or name in module._buffers)

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
        if not isinstance(x, fx.Node) or node_shape(x) is None or not tensors \
                or any(not self.module_tensor(v) or node_shape(v) is None for v in tensors.values()):
            return False
        owners = {str(v.target).rpartition(".")[0] for v in tensors.values()}
        if len(owners) != 1:
            return False
        owner = owners.pop()
        source, shape = self.layout(x), node_shape(node)
        label = target_name(node.target)
        if label in ("batch_norm", "group_norm"):
            if source.dim != 1 or not self.carries(x, node):
                return False
            channels = int(node_shape(x)[1])
            if any(tuple(node_shape(v)) != (channels,) for v in tensors.values()):
                return False
            if label == "group_norm":
                groups = bound.get("num_groups")
                if not isinstance(groups, int):
                    return False
                if len(source.segments) != 1 or source.segments[0][1] != 1:
                    self.freeze(source, f"group norm in {where(node)} normalises a concatenation")
                else:
                    self.uf.require_multiple(source.segments[0][0], groups)
            for v in tensors.values():
                self.use_parameter(str(v.target), {0: source.segments})
            self.layouts[node] = source
            return True
        weight = tensors.get("weight")
        if weight is None:
            return False
        wshape = node_shape(weight)
        rank = len(node_shape(x))
        if label == "linear":
            if len(wshape) != 2 or source.dim != rank - 1 or int(wshape[1]) != int(node_shape(x)[-1]):
                return False
        elif source.dim != 1 or len(wshape) != 4 or not isinstance(self.modules.get(owner), nn.Conv2d):
            return False
        elif bound.get("groups", 1) != 1 or int(wshape[1]) != int(node_shape(x)[1]):
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
        before, after = node_shape(source), node_shape(node)
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

    def reduction(self, node: fx.Node, source: fx.Node) -> bool:
        """``mean``/``sum``/``amax``/``amin`` over given dims. Over other dims than the channels (global pooling,
        the groups of a split attention) the layout is kept, its dim moved where dims before it went; over the
        channels the result is a new tensor (a spatial attention map) and the input's unit stays slimmable: the
        reduction runs over whatever channels are active. False for a reduction over every dim."""
        before, after = node_shape(source), node_shape(node)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if before is None or after is None or not dims or not all(isinstance(d, int) for d in dims):
            return False
        dims = {d % len(before) for d in dims}
        layout = self.layout(source)
        if layout.dim in dims:
            self.layouts[node] = self.fresh(node, f"{target_name(node.target)} over the channels in {where(node)}")
            return True
        dim = layout.dim if len(after) == len(before) else layout.dim - sum(d < layout.dim for d in dims)
        if dim >= len(after) or int(after[dim]) != int(before[layout.dim]):
            return False
        self.layouts[node] = Layout(dim, layout.segments)
        return True

    def group_split(self, node: fx.Node, source: fx.Node) -> bool:
        """A reshape that splits the channels into groups, ``(N, C, H, W) -> (N, G, C // G, H, W)`` (split
        attention, channel shuffle): freezes the channels (a prefix of C is not G prefixes of C // G), naming the
        reason; the result's unit is the inner group's. False for any other reshape."""
        before, after = node_shape(source), node_shape(node)
        dim = self.layout(source).dim
        if before is None or after is None or len(after) != len(before) + 1 or dim + 1 >= len(after):
            return False
        if tuple(after[:dim]) != tuple(before[:dim]) or tuple(after[dim + 2:]) != tuple(before[dim + 1:]) \
                or int(after[dim]) * int(after[dim + 1]) != int(before[dim]) or int(after[dim]) == 1:
            return False
        reason = f"{target_name(node.target)} in {where(node)} splits the channels into groups (channel shuffle, split attention)"
        self.freeze(self.layout(source), reason)
        self.layouts[node] = self.fresh(node, reason, dim=dim + 1)
        return True

    def index(self, node: fx.Node, source: fx.Node) -> bool:
        """``x[...]`` with constant slices: all the channels (a crop of other dims) keeps the layout; a fixed
        range of them (``x[:, :C]``) freezes it, as it would break at another width. False for other indices."""
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        layout, before = self.layout(source), node_shape(source)
        if before is None or any(not isinstance(i, slice) for i in index[:layout.dim + 1]) \
                or any(isinstance(v, fx.Node) for i in index if isinstance(i, slice) for v in (i.start, i.stop, i.step)):
            return False
        channels = index[layout.dim] if len(index) > layout.dim else slice(None)
        if channels == slice(None):
            if not all(isinstance(i, (slice, int)) for i in index):
                return False
            self.layouts[node] = layout
        else:
            self.freeze_all(node, f"getitem in {where(node)} takes a fixed range of the channels (x[:, a:b]), which "
                                  "another width would break")
        return True

    def permute(self, node: fx.Node, source: fx.Node) -> None:
        rank = len(node_shape(source))
        dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
        if node.op == "call_function" and not dims:
            dims = (node.kwargs.get("dims"),)
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if not all(isinstance(d, int) for d in dims) or len(dims) != rank:
            self.freeze_all(node, f"permute in {where(node)} with dims not known when tracing")
            return
        layout = self.layout(source)
        order = [d % rank for d in dims]
        self.layouts[node] = Layout(order.index(layout.dim), layout.segments)

    def concatenate(self, node: fx.Node, args: list[fx.Node]) -> None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        layouts = [self.layout(a) for a in args]
        rank = len(node_shape(node))
        if not isinstance(dim, int) or not layouts or any(l.dim != dim % rank for l in layouts) \
                or any(len(node_shape(a)) != rank for a in args):
            self.freeze_all(node, f"concatenation in {where(node)} along a dimension that is not the channels")
            return
        self.layouts[node] = Layout(layouts[0].dim, tuple(s for l in layouts for s in l.segments))

