"""Shape rules of channel tracing: where the channels of a tensor go through flatten, reshape, reductions,
indexing, permutes and concatenations, and how a module's parameter used directly in arithmetic (a layer scale)
is sliced. :class:`autoslim.network.op_rules.OpTracer` dispatches to them.
"""

from __future__ import annotations

import math

import torch.fx as fx

from .channel_flow import ChannelFlow
from .fx_graph import node_shape, target_name, where
from .trace_records import Layout

__all__ = ["ShapeRules"]


class ShapeRules(ChannelFlow):
    """:class:`ChannelFlow` with the rules of tensor shapes; each returns False when its pattern does not apply."""

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

    def stack(self, node: fx.Node, args: list[fx.Node]) -> bool:
        """``torch.stack`` of tensors of one layout along a new dim (the branches of a selective-kernel block): their
        units are tied and the channels move one dim on where the new dim comes before them. False otherwise."""
        after = node_shape(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        first = self.layout(args[0])
        if after is None or not isinstance(dim, int) or len(args) != len(node.args[0]) \
                or any(self.layout(a).dim != first.dim for a in args):
            return False
        dim %= len(after)
        layout = first
        for arg in args[1:]:
            layout = self.tie(layout, self.layout(arg), f"stack in {where(node)} of differently made tensors")
        self.layouts[node] = Layout(layout.dim + (dim <= layout.dim), layout.segments)
        return True

    def moves_channels(self, node: fx.Node, source: fx.Node) -> bool:
        """A reshape (or squeeze, unsqueeze, transpose) of a per-channel vector, the channels its only dim past the
        batch above 1, that puts them in another dim: ``(N, C) -> (N, 1, C)`` and back (see
        :mod:`autoslim.network.moved_channels`)."""
        before, after = node_shape(source), node_shape(node)
        if before is None or after is None:
            return False
        channels = int(before[self.layout(source).dim])
        big_before = [int(s) for s in before[1:] if int(s) != 1]
        big_after = [i for i, s in enumerate(after) if i > 0 and int(s) != 1]
        return big_before == [channels] and len(big_after) == 1 and int(after[big_after[0]]) == channels \
            and big_after[0] != self.layout(source).dim

    def unit_dims(self, node: fx.Node, source: fx.Node) -> bool:
        """A reshape that keeps the dims up to the channels and only merges, splits, adds or drops the dims after
        them, ``(N, C, H, W) -> (N, C, H * W)`` or ``(N, C, 1, 1) -> (N, C)`` and back, without naming the channel
        count: the layout is kept."""
        before, after = node_shape(source), node_shape(node)
        dim = self.layout(source).dim
        if before is None or after is None or len(after) <= dim \
                or [int(s) for s in after[:dim + 1]] != [int(s) for s in before[:dim + 1]] \
                or math.prod(int(s) for s in after[dim + 1:]) != math.prod(int(s) for s in before[dim + 1:]):
            return False
        values = list(node.args[1:]) + list(node.kwargs.values())
        values += [v for a in values if isinstance(a, (tuple, list)) for v in a]
        if int(before[dim]) > 1 and int(before[dim]) in [v for v in values if isinstance(v, int)]:
            return False  # names the channel count: would break at another width
        self.layouts[node] = self.layout(source)
        return True

    def pads_other_dims(self, node: fx.Node, source: fx.Node) -> bool:
        """``F.pad`` of dims after the channels only (spatial padding: HGNet's stem)."""
        before = node_shape(source)
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if before is None or not isinstance(pad, (tuple, list)) or not all(isinstance(p, int) for p in pad):
            return False
        return len(pad) <= 2 * (len(before) - 1 - self.layout(source).dim)
