"""Channels moved into another dim, and a conv along them (ECA, Efficient Channel Attention).

ECA gates the channels of ``x`` with a 1-D conv that runs *across* them: the per-channel vector ``(N, C)`` is
viewed as ``(N, 1, C)``, a conv of one input and one output channel slides along its C positions, and the result
is viewed back as ``(N, C, 1, 1)``. Such a conv has no per-channel parameter and its output has as many positions
as its input, so at any prefix of the channels the supernet computes what the static network of that width does
(the last channel of a prefix sees the padding the narrower network sees): the unit stays slimmable.

The rules here:

- a *move*, a reshape, flatten, squeeze, unsqueeze or transpose of a per-channel vector that puts the channels
  in another dim, keeps the layout, its dim moved (and back: a move into dim 1 ends the moved state); a reshape
  that names the channel count freezes them, as it would break at another width;
- a conv along the channels (:meth:`MovedChannels.channel_conv`: ``nn.Conv1d`` of one input and one output
  channel, groups 1, stride 1, output as long as its input) carries its input's layout and is recorded as a
  layer call of kind ``"chconv"``, whose MACs scale with the active channels; its own padding may come from an
  ``F.pad`` of the moved dim before it (timm's circular ECA);
- elementwise ops, ops with a scalar and elementwise ops of two moved tensors of one shape keep the moved state;
- any other use of moved channels (another conv, a linear or a norm across them, a concatenation, ...) freezes
  the units involved, with the reason, and its MACs are counted as they are.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .fx_graph import node_shape, target_name, where
from .op_tables import (BINARY, BINARY_METHODS, ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ELEMENTWISE_MODULES,
                        ELEMENTWISE_NAMES, MOVES)
from .shape_rules import ShapeRules
from .trace_records import Layout

__all__ = ["MovedChannels", "CHANNEL_CONV"]

CHANNEL_CONV = "chconv"
"""The kind of the layer call of a conv along the channels (:meth:`MovedChannels.channel_conv`)."""

_KEEPS = ("only a conv along the channels (a Conv1d of one input and one output channel, stride 1, keeping the "
          "length), elementwise ops and a move back keep them slimmable")


class MovedChannels(ShapeRules):
    """:class:`ShapeRules` with the rules of channels moved into another dim; each returns False when its pattern
    does not apply. ``moved`` maps the nodes holding moved channels to the op that moved them; ``padded`` those
    padded along them to the total padding (their layout is that of the channels before the padding)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__(modules)
        self.moved: dict[fx.Node, str] = {}
        self.padded: dict[fx.Node, int] = {}

    def move(self, node: fx.Node, source: fx.Node) -> bool:
        """A move of a per-channel vector's channels into another dim, ``(N, C) -> (N, 1, C)``, or back."""
        if not self.moves_channels(node, source):
            return False
        before, after = node_shape(source), node_shape(node)
        layout = self.layout(source)
        channels = int(before[layout.dim])
        if node.target in ("view", "reshape"):
            values = list(node.args[1:]) + list(node.kwargs.values())
            values += [v for a in values if isinstance(a, (tuple, list)) for v in a]
            if channels in [v for v in values if isinstance(v, int)]:
                self.freeze_all(node, f"{target_name(node.target)} in {where(node)} moves the channels into another "
                                      "dim naming their count, which another width would break")
                return True
        dim = next(i for i, s in enumerate(after) if i > 0 and int(s) == channels)
        self.layouts[node] = Layout(dim, layout.segments)
        self.moved.pop(node, None)
        if dim != 1:
            self.moved[node] = self.moved.get(source, f"{target_name(node.target)} in {where(node)}")
        return True

    def carry_moved(self, node: fx.Node, source: fx.Node) -> None:
        """``node`` holds ``source``'s channels where ``source`` holds them (moved, padded)."""
        self.layouts[node] = self.layout(source)
        if source in self.moved:
            self.moved[node] = self.moved[source]
        if source in self.padded:
            self.padded[node] = self.padded[source]

    def channel_conv(self, node: fx.Node, name: str, module: nn.Module, source: fx.Node) -> bool:
        """A conv along the channels: ``nn.Conv1d(1, 1, k)``, groups 1, stride 1, reading ``(N, 1, C)`` with the
        channels along its length and writing as many positions as the channels (padding ``(k - 1) // 2`` for an
        odd kernel, its own or an ``F.pad`` before it)."""
        before, after = node_shape(source), node_shape(node)
        layout = self.layout(source)
        if type(module) is not nn.Conv1d or before is None or after is None or len(before) != 3 or len(after) != 3:
            return False
        if module.in_channels != 1 or module.out_channels != 1 or module.groups != 1 or tuple(module.stride) != (1,) \
                or layout.dim != 2 or int(after[1]) != 1 or int(after[2]) != int(before[2]) - self.padded.get(source, 0):
            return False
        self.layouts[node] = layout
        if source in self.moved:
            self.moved[node] = self.moved[source]
        self.record(name, node, CHANNEL_CONV, layout, layout)
        return True

    def pad_channels(self, node: fx.Node, source: fx.Node) -> bool:
        """``F.pad`` of the last dim of moved channels (ECA's circular padding before its conv): only a conv along
        the channels that takes the padded length back to the channels' count may read it."""
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        before = node_shape(source)
        if node.target is not F.pad or source in self.padded or before is None \
                or self.layout(source).dim != len(before) - 1 or not isinstance(pad, (tuple, list)) or len(pad) != 2 \
                or not all(isinstance(p, int) and p >= 0 for p in pad):
            return False
        self.carry_moved(node, source)
        self.padded[node] = sum(pad)
        return True

    def visit_moved(self, node: fx.Node, args: list[fx.Node]) -> None:
        """A node reading moved channels: the rules above, or freeze them with the reason."""
        target = node.target
        label = f"{target_name(target)} in {where(node)}"
        source = args[0] if len(args) == 1 else None
        padded = any(a in self.padded for a in args)
        if node.op == "call_module":
            module = self.modules[str(target)]
            label = f"{type(module).__name__} {target}"  # where(node) is the module itself
            if source is not None and self.channel_conv(node, str(target), module, source):
                return
            if source is not None and isinstance(module, ELEMENTWISE_MODULES) and self.carries(source, node) \
                    and not (isinstance(module, nn.PReLU) and module.num_parameters > 1):
                self.carry_moved(node, source)
                return
        elif source is not None and self.carries(source, node) and (
                target in ELEMENTWISE_FUNCTIONS or target in ELEMENTWISE_METHODS or target_name(target) in ELEMENTWISE_NAMES
                or target in BINARY or target in BINARY_METHODS):  # an op with a scalar: an elementwise op
            self.carry_moved(node, source)
            return
        elif source is not None and not padded and target in MOVES and self.unit_dims(node, source):
            self.carry_moved(node, source)  # (N, 1, C) -> (N, 1, C, 1): still moved
            return
        elif source is not None and not padded and target in MOVES and self.move(node, source):
            return
        elif source is not None and self.pad_channels(node, source):
            return
        elif len(args) == 2 and not padded and (target in BINARY or target in BINARY_METHODS) \
                and all(a in self.moved for a in args) and node_shape(args[0]) == node_shape(args[1]) == node_shape(node):
            self.layouts[node] = self.tie(self.layout(args[0]), self.layout(args[1]),
                                          f"elementwise op in {where(node)} of differently made channels")
            self.moved[node] = self.moved[args[0]]
            return
        origin = next(self.moved[a] for a in args if a in self.moved)
        self.freeze_all(node, f"{label} reads channels moved into another dim (by {origin}): {_KEEPS}")
        self.opaque.append(node.name)  # its channels frozen: whatever it computes has a fixed cost
