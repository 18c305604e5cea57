"""What tracing finds: the channel units of a model and, per layer call, the units it reads and writes.

A tensor's :class:`Layout` says which dimension holds its channels and which units (each with a *scale*:
features per channel) they are made of; a :class:`LayerCall` is one call of a slim-able module; a
:class:`ParameterUse` a parameter that ``forward`` uses directly; a :class:`Trace` holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch.fx as fx
from torch import nn

from .fx_graph import OPAQUE_MACS, node_shape, positions, propagate_shapes
from .units import ChannelUnit

__all__ = ["Segment", "Layout", "LayerCall", "ParameterUse", "Trace", "input_count"]

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
    (a conv or linear layer starts one unit; BatchNorm, depthwise convs and convs along the channels carry their
    input's).

    A conv along the channels (``"chconv"``, ECA's ``Conv1d(1, 1, k)`` over ``(N, 1, C)``: see
    :mod:`autoslim.network.moved_channels`) is no slim layer: it runs as it is, on whatever channels are active,
    and only its MACs (``kernel`` per active channel and output position) depend on the config.
    """

    module: str
    node: str
    kind: str  # "conv", "dwconv" (grouped conv carrying its input's unit), "linear", "bn", "ln", "chconv"
    inputs: tuple[Segment, ...]
    outputs: tuple[Segment, ...]
    out_spatial: int  # product of the output's non-channel dims past the batch (H * W; 1 for a linear on vectors
    # and for a conv along the channels of a per-channel vector)
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
    opaque: list[str] = field(default_factory=list)  # inference graph nodes run whole: leaf modules, unsupported ops
    _opaque_macs: dict[int, int] = field(repr=False, default_factory=dict)  # input size -> their MACs

    def unit_index(self) -> dict[str, int]:
        return {unit.name: i for i, unit in enumerate(self.units)}

    def opaque_macs(self, input_size: int) -> int:
        """MACs per sample of the calls run whole (leaf modules, frozen unsupported operations) at ``input_size``."""
        if not self.opaque:
            return 0
        if input_size not in self._opaque_macs:
            propagate_shapes(self.graph_module, self.in_channels, input_size)  # node metadata now of input_size
            nodes = {node.name: node for node in self.graph_module.graph.nodes}
            self._opaque_macs[input_size] = sum(nodes[name].meta.get(OPAQUE_MACS, 0) for name in self.opaque)
        return self._opaque_macs[input_size]

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
            shape = node_shape(nodes[call.node])
            sizes.append(positions(shape, call.kind))
        return sizes

