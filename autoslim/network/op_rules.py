"""The op rules of channel tracing: how each module, function and method maps its inputs' layouts to its output's.

Conv and linear layers start units; BatchNorm, elementwise ops and pooling carry their input's layout; residual
additions tie units; concatenations concatenate layouts; flatten and permute move or scale them; a per-channel
vector moved into another dim keeps its units only through a conv along the channels and a move back (see
:mod:`autoslim.network.moved_channels`); anything else freezes the units it touches, with the reason (see
:mod:`autoslim.network.tracing`).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .moved_channels import MovedChannels
from .fx_graph import is_opaque_leaf, node_shape, target_name, tensor_args, where
from .layers import is_channels_last_layer_norm, is_layer_norm_2d
from .trace_records import Layout
from .op_tables import (BINARY, BINARY_METHODS, CAT, ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ELEMENTWISE_MODULES,
                        ELEMENTWISE_NAMES, FLATTEN, FUNCTIONAL, MOVES, PERMUTE, POOL_FUNCTIONS, POOL_MODULES,
                        REDUCTION_METHODS, REDUCTIONS, RESHAPE_METHODS, SHAPE_QUERIES, SPLITS, STACK)

__all__ = ["OpTracer"]


class OpTracer(MovedChannels):
    """:class:`MovedChannels` with the op rules: ``visit`` reads one node."""

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
        if node.op != "get_attr" and any(arg in self.moved for arg in args):
            self.visit_moved(node, args)
        elif node.op == "get_attr":
            self.layouts[node] = self.fresh(node, f"parameter {node.target} used directly")
        elif node.op == "call_module":
            self.visit_module(node, args)
        elif node.op in ("call_function", "call_method"):
            self.visit_function(node, args)
        else:
            self.freeze_all(node, f"unsupported node {node.op} in {where(node)}")

    def visit_untyped(self, node: fx.Node) -> None:
        """Nodes without a tensor output: shape queries are harmless, splits and the like are not."""
        if node.op in ("call_function", "call_method") and node.target in SHAPE_QUERIES:
            return
        if node.op == "call_function" and node.target is getattr:
            return
        args = tensor_args(node)
        if not args:
            return
        if isinstance(node.target, type) and issubclass(node.target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            reason = "network outputs"
        elif node.target in SPLITS:
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
        if kind is nn.Conv1d and source is not None and self.channel_conv(node, name, module, args[0]):
            pass  # a conv along the channels (ECA's): see moved_channels
        elif kind is nn.Conv2d and source is not None and source.dim == 1:
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
        elif isinstance(module, ELEMENTWISE_MODULES) and source is not None and self.carries(args[0], node):
            if isinstance(module, nn.PReLU) and module.num_parameters > 1:
                self.freeze(source, f"PReLU {name} has a parameter per channel")
            self.layouts[node] = source
        elif isinstance(module, POOL_MODULES) and source is not None and source.dim == 1 and self.carries(args[0], node):
            self.layouts[node] = source
        elif isinstance(module, nn.Flatten) and source is not None and self.flatten(node, args[0]):
            pass
        elif is_opaque_leaf(module):
            self.freeze_all(node, f"{kind.__name__} at {name} is a leaf module (not traced)")
            self.opaque.append(node.name)
        else:
            self.freeze_all(node, f"unsupported module {kind.__name__} at {name}")
            self.opaque.append(node.name)  # frozen all round: whatever it computes has a fixed cost

    def visit_function(self, node: fx.Node, args: list[fx.Node]) -> None:
        target = node.target
        label = target_name(target)
        if target in FUNCTIONAL and self.functional(node):
            pass
        elif target in BINARY or target in BINARY_METHODS:
            self.binary(node, args)
        elif (target in ELEMENTWISE_FUNCTIONS or target in ELEMENTWISE_METHODS or label in ELEMENTWISE_NAMES) \
                and len(args) == 1 and self.carries(args[0], node):
            self.layouts[node] = self.layout(args[0])
        elif target in POOL_FUNCTIONS and len(args) == 1 and self.layout(args[0]).dim == 1 and self.carries(args[0], node):
            self.layouts[node] = self.layout(args[0])
        elif (target in FLATTEN or target in RESHAPE_METHODS) and len(args) == 1 and self.flatten(node, args[0]):
            pass
        elif target in RESHAPE_METHODS and len(args) == 1 and self.parameter_view(node, args[0]):
            pass
        elif target in RESHAPE_METHODS and len(args) == 1 and self.group_split(node, args[0]):
            pass
        elif target in RESHAPE_METHODS and len(args) == 1 and self.unit_dims(node, args[0]):
            pass
        elif target in MOVES and len(args) == 1 and self.move(node, args[0]):
            pass  # (N, C) -> (N, 1, C): see moved_channels
        elif target in ("unsqueeze", torch.unsqueeze, torch.squeeze) and len(args) == 1 and self.unit_dims(node, args[0]):
            pass
        elif target in FLATTEN or target in RESHAPE_METHODS or target in ("transpose", torch.transpose):
            self.freeze_all(node, f"{label} in {where(node)} mixes the channels with other dims (channel shuffle)")
        elif target is F.pad and len(args) == 1 and self.pads_other_dims(node, args[0]):
            self.layouts[node] = self.layout(args[0])
        elif target in ("expand_as", "expand") and args and self.carries(args[0], node):
            self.layouts[node] = self.layout(args[0])  # broadcast over other dims: (N, C, 1, 1) to (N, C, H, W)
            if len(args) == 2 and node_shape(args[1])[self.layout(args[0]).dim] == node_shape(node)[self.layout(args[0]).dim]:
                self.layouts[node] = self.tie(self.layout(args[0]), self.layout(args[1]),
                                              f"expand_as in {where(node)} to a tensor of other channels")
        elif (target in REDUCTIONS or target in REDUCTION_METHODS) and len(args) == 1 and self.reduction(node, args[0]):
            pass
        elif target is operator.getitem and len(args) == 1 and self.index(node, args[0]):
            pass
        elif (target in PERMUTE or target == "permute") and len(args) == 1:
            self.permute(node, args[0])
        elif target in CAT:
            self.concatenate(node, args)
        elif target in STACK and args and self.stack(node, args):
            pass
        elif isinstance(target, type) and issubclass(target, tuple):  # GoogLeNetOutputs(logits, aux2, aux1)
            for arg in args:
                self.freeze(self.layout(arg), "network outputs")
        elif target is operator.getitem and not args:
            source = node.args[0]
            self.layouts[node] = self.fresh(node, self.untyped_reasons.get(source, f"part of {target_name(source)}"))
        else:
            self.freeze_all(node, f"unsupported operation {label} (in {where(node)})")
            self.opaque.append(node.name)

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
        if len(params) == 1 and self.module_tensor(params[0]) and math.prod(node_shape(params[0])) == 1:
            other = next(a for a in args if a is not params[0])  # a learnable scalar (timm's LearnableAffineBlock)
            if self.carries(other, node):
                self.layouts[node] = self.layout(other)
                return
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

    def functional(self, node: fx.Node) -> bool:
        """A functional conv, linear or norm whose weights are module attributes (a layer subclass with its own
        forward, such as timm's ``BatchNormAct2d`` or ``Linear``): the same rule as the module, its parameters
        and buffers sliced by attribute. False when the call is not of that form."""
        names = FUNCTIONAL.get(node.target)
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
