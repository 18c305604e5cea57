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
  channel dimension (ConvNeXt's channels-last MLP);
- a per-channel vector moved into another dim, ``(N, C) -> (N, 1, C)``, and read by a conv along the channels
  (ECA's ``Conv1d(1, 1, k)``, stride 1, as many outputs as inputs) keeps its unit, and moving it back restores the
  channel dim (:mod:`autoslim.network.moved_channels`); any other use of moved channels freezes them.

Anything the tracer cannot prove safe to slice (channel shuffle and other reshapes that mix channels,
splits along the channels, LayerNorm over the channels, parameters used directly in arithmetic, unknown
modules or functions) freezes the units involved and records why. The image channels and the network's
outputs are frozen too.

Layers that run only in training mode (auxiliary classifiers of GoogLeNet and Inception v3) are found by
tracing the training-mode graph as well: they become slim layers tied to the same units, but their
multiply-adds are not part of the network's cost, which is that of inference.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from .fx_graph import OPAQUE_MACS, propagate_shapes, refuse_transformers, symbolic_trace, trace_or_explain
from .op_rules import OpTracer
from .trace_records import LayerCall, Layout, ParameterUse, Segment, Trace
from .units import ChannelUnit

__all__ = ["trace_model"]


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
    refuse_transformers(model)
    was_training = model.training
    try:
        model.eval()  # the inference graph defines the units and the cost
        gm = trace_or_explain(model)
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
    tracer = OpTracer(dict(model.named_modules()))
    tracer.run(gm)
    # a tensor padded along its channels (before a conv along them) is not its layout's count of channels long
    eval_layouts = {node: layout for node, layout in tracer.layouts.items() if node not in tracer.padded}
    opaque = list(tracer.opaque)  # leaf modules called whole in the inference graph, with their MACs
    nodes = {node.name: node for node in gm.graph.nodes}
    opaque_macs = {input_size: sum(nodes[name].meta.get(OPAQUE_MACS, 0) for name in opaque)}
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
    trace.opaque, trace._opaque_macs = opaque, opaque_macs
    trace.train_error = train_error
    return trace


def _has_train_only_modules(gm: fx.GraphModule, train_gm: fx.GraphModule) -> bool:
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    return any(n.op == "call_module" and str(n.target) not in called for n in train_gm.graph.nodes)


def _collect(gm: fx.GraphModule, tracer: OpTracer, in_channels: int, input_size: int,
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
        if call.kind in ("bn", "dwconv", "ln", "chconv"):
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
