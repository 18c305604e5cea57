"""Exact cost of any channel config by arithmetic over the traced shapes.

Convention (the AutoSlim paper's, stated in every table): "FLOPs" are the multiply-accumulates (MACs) of
conv and linear layers, a conv along the channels (ECA's) included; bias, BatchNorm, activations and pooling are
not counted. This equals ``torch.utils.flop_counter.FlopCounterMode`` total / 2 on the static model. Parameters
are every parameter of the static model, BatchNorm affine parameters included (buffers are not parameters).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from torch import nn

from .trace_records import Trace, input_count

__all__ = ["Cost", "CostModel", "count_parameters"]


class Cost(NamedTuple):
    macs: int
    params: int


class CostModel:
    """MACs and parameters of a traced network as functions of its per-unit channel counts.

    Built once from a :class:`~autoslim.network.trace_records.Trace`; each query is a loop of integer products over the
    layer calls, with no tensor work.
    """

    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        modules = trace.modules
        # per call: (kind, input segments, output unit, MACs per output position per channel pair, groups,
        # group width, counted): a layer reading a concatenation reads the sum of its parts
        self._calls = []
        seen: set[str] = set()
        self._layers = []  # one entry per module: (kind, input segments, out unit, per-channel params, bias, groups, width)
        counted = 0
        for call in trace.calls:
            module = modules[call.module]
            groups, width = 1, 1
            if call.kind in ("conv", "dwconv"):
                per = module.kernel_size[0] * module.kernel_size[1]
                if call.kind == "conv":
                    groups = module.groups
                else:
                    width = module.in_channels // module.groups
            elif call.kind == "linear":
                per = 1
            elif call.kind == "chconv":  # one input and one output channel: the kernel per channel and position
                per = module.kernel_size[0]
            else:
                per = 0
            self._calls.append((call.kind, call.inputs, call.out_unit, per, groups, width, not call.train_only))
            if call.module in seen or call.functional or call.kind == "chconv":
                continue  # a functional call's parameters are parameter uses; a conv along the channels' are fixed
            seen.add(call.module)
            counted += sum(p.numel() for p in module.parameters(recurse=False))
            if call.kind in ("bn", "ln"):
                per_param = int(module.weight is not None) + int(module.bias is not None)
                self._layers.append(("bn", call.inputs, call.out_unit, per_param, 0, 1, 1))
            else:
                self._layers.append((call.kind, call.inputs, call.out_unit, per, int(module.bias is not None), groups,
                                     width))
        # parameters used directly (layer scale, a functional norm's or linear layer's): their elements per
        # combination of sliced channels, and the units along each sliced dimension
        self._parameters: list[tuple[int, list[tuple]]] = []
        maxima = [unit.maximum for unit in trace.units]
        for use in trace.parameters:
            if use.buffer:
                continue
            numel = modules[use.owner]._parameters[use.name].numel()
            counted += numel
            for _, segments in use.dims:
                numel //= input_count(segments, maxima)
            self._parameters.append((numel, [segments for _, segments in use.dims]))
        self._fixed_params = count_parameters(modules[""]) - counted
        self._spatial: dict[int, list[int]] = {trace.input_size: [c.out_spatial for c in trace.calls]}

    def spatial(self, input_size: int) -> list[int]:
        if input_size not in self._spatial:
            self._spatial[input_size] = self._trace.spatial_sizes(input_size)
        return self._spatial[input_size]

    def per_call(self, counts: Sequence[int], input_size: int | None = None) -> list[int]:
        """MACs of every layer call (in ``trace.calls`` order) at per-unit ``counts``; 0 for train-only calls."""
        spatial = self.spatial(self._trace.input_size if input_size is None else input_size)
        result = []
        for (kind, inputs, o, per, groups, width, counted), hw in zip(self._calls, spatial):
            if not counted or kind in ("bn", "ln"):
                result.append(0)
                continue
            n_in = input_count(inputs, counts)
            if kind == "dwconv":
                result.append(n_in * width * per * hw)
            elif kind == "chconv":
                result.append(n_in * per * hw)
            else:
                result.append(counts[o] * (n_in // groups) * per * hw)
        return result

    def __call__(self, counts: Sequence[int], input_size: int | None = None) -> Cost:
        """Cost at per-unit ``counts`` (indexed like ``trace.units``) and ``input_size`` (default: traced)."""
        macs = sum(self.per_call(counts, input_size))
        macs += self._trace.opaque_macs(self._trace.input_size if input_size is None else input_size)
        params = self._fixed_params
        for kind, inputs, o, per, bias, groups, width in self._layers:
            n_in = input_count(inputs, counts)
            if kind == "bn":
                params += per * n_in
            elif kind == "dwconv":
                params += n_in * (width * per + bias)
            else:
                params += counts[o] * ((n_in // groups) * per + bias)
        for numel, dims in self._parameters:
            for segments in dims:
                numel *= input_count(segments, counts)
            params += numel
        return Cost(macs, params)


def count_parameters(model: nn.Module) -> int:
    """All parameters of ``model`` (shared ones once)."""
    return sum(p.numel() for p in model.parameters())
