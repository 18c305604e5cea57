"""torch.fx helpers of the network side: the one leaf tracer, shape propagation with fake tensors, node lookups.

:class:`LeafTracer` keeps slim layers and torchvision's ``LayerNorm2d`` as single modules: tracing (channel
units) and scoring (slim layers whose active counts must stay attributes, not traced constants) use it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import sys
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .layers import SlimBatchNorm2d, SlimConv2d, SlimLayerNorm, SlimLinear, is_channels_last_layer_norm, is_layer_norm_2d

__all__ = ["LeafTracer", "symbolic_trace", "trace_or_explain", "propagate_shapes", "node_shape", "tensor_args",
           "positions", "refuse_transformers", "target_name", "where", "leaf_module", "is_opaque_leaf", "OPAQUE_MACS"]

OPAQUE_MACS = "autoslim_macs"
"""The node metadata key of a call's MACs, measured by :func:`propagate_shapes`."""
_LEAF_TYPES: set[type] = set()
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def leaf_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Mark a module class as a leaf: called whole, never traced into (for a ``forward`` with control flow that
    torch.fx cannot trace). Its input and output channels are frozen; its MACs and parameters count as they are.
    Use as a class decorator, call it on a class you do not own, or give the class ``autoslim_leaf = True``.
    timm's not-traced modules (its ``register_notrace_module``) are leaves too, except its norm layers, which
    autoslim slices."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"leaf_module takes an nn.Module class, not {cls!r}")
    _LEAF_TYPES.add(cls)
    return cls


def _timm_registry() -> tuple[tuple[type, ...], tuple[Any, ...]]:
    """timm's not-traced modules and functions, when timm is already imported (never imported here)."""
    if "timm" not in sys.modules:
        return (), ()
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:
        return (), ()
    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


def is_opaque_leaf(module: nn.Module) -> bool:
    """A module marked as a leaf (:func:`leaf_module`, ``autoslim_leaf = True`` or timm's registry)."""
    kind = type(module)
    if getattr(kind, "autoslim_leaf", False) or any(issubclass(kind, leaf) for leaf in _LEAF_TYPES):
        return True
    return kind.__module__.startswith("timm.") and isinstance(module, _timm_registry()[0]) \
        and not isinstance(module, _NORMS)


def positions(shape: torch.Size, kind: str) -> int:
    """Output positions per sample of a layer call: H * W for a conv, the non-feature dims for a linear or a conv along
    the channels (its channels are its length)."""
    if kind in ("linear", "chconv"):
        return math.prod(int(s) for s in shape[1:-1])
    return math.prod(int(s) for s in shape[2:])


def node_shape(node: Any) -> torch.Size | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)


def tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if node_shape(n) is not None else None)
    return found


def propagate_shapes(graph_module: fx.GraphModule, in_channels: int, input_size: int, batch: int = 1) -> None:
    """Annotate every node with its output shape at ``input_size`` (fake tensors: no compute) and every call with
    its MACs per sample (``node.meta[OPAQUE_MACS]``, FlopCounterMode / 2): the cost counts them for the calls that
    the channel rules leave whole (leaf modules, frozen unsupported operations)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp
    from torch.utils.flop_counter import FlopCounterMode

    class CountingShapeProp(ShapeProp):
        def run_node(self, n: fx.Node) -> Any:
            if n.op not in ("call_module", "call_function", "call_method"):
                return super().run_node(n)
            with FlopCounterMode(display=False) as counter:
                result = super().run_node(n)
            n.meta[OPAQUE_MACS] = counter.get_total_flops() // 2 // batch
            return result

    was_training = graph_module.training
    graph_module.eval()
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, logger.disabled = logger.disabled, True  # on a failed shape check both log a traceback: the
    try:                                               # caller turns the error into one line instead
        example = torch.zeros(batch, in_channels, input_size, input_size)
        with contextlib.redirect_stderr(io.StringIO()):
            CountingShapeProp(graph_module, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
    finally:
        logger.disabled = disabled
        graph_module.train(was_training)


_SLIM_LAYERS = (SlimConv2d, SlimLinear, SlimBatchNorm2d, SlimLayerNorm)


class LeafTracer(fx.Tracer):
    """torch.fx's tracer, keeping torchvision's and timm's ``LayerNorm2d`` and timm's ``LayerNorm`` as one module each
    (a LayerNorm over the channels) and slim layers as leaves, so that their active counts stay attributes and not
    traced constants; modules marked as leaves (:func:`leaf_module`) are called whole, and timm's not-traced
    functions are wrapped."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=_timm_registry()[1])

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_layer_norm_2d(m) or is_channels_last_layer_norm(m) or isinstance(m, _SLIM_LAYERS) \
            or is_opaque_leaf(m) or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module, tracer: fx.Tracer | None = None) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with autoslim's leaf modules."""
    tracer = tracer or LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, model.__class__.__name__)


def trace_or_explain(model: nn.Module) -> fx.GraphModule:
    try:
        return symbolic_trace(model)
    except Exception as error:  # fx raises many types; the user needs one line
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx: {str(error).splitlines()[0]}") from error


_TRANSFORMER_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def refuse_transformers(model: nn.Module) -> None:
    name = type(model).__name__
    if any(isinstance(m, _TRANSFORMER_TYPES) for m in model.modules()) or "VisionTransformer" in name \
            or "SwinTransformer" in name or name in ("MaxVit",):
        raise ValueError(f"{name} is a transformer: autoslim slims the channels of convolutional networks "
                         "(attention heads and token dimensions are not channel units)")


def target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def where(node: fx.Node) -> str:
    """The innermost module a node was traced in (``features.2.branch2``), or its node name at the top level."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()), ("", None))[0] if stack else ""
    return path or node.name


