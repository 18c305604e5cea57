"""Slim layers: torch layers that run on a prefix of their channels (US-Nets, Yu & Huang 2019, section 3).

Each layer is a subclass of its torch counterpart. The supernet sets the active channel counts from
outside (:meth:`set_active`); ``forward`` only slices the parameters (and BatchNorm running statistics)
to those prefixes and calls the functional op. Slices of a contiguous parameter along its first
dimension are views, so a layer at full width runs exactly the plain op. Every slice is written as a tuple
index (``[:k, ...]``): at the full count torch then makes an alias instead of a slice, whose backward passes
the gradient through instead of scattering it into a fresh full-size zero tensor.

A layer whose input is a concatenation (DenseNet, Inception, SqueezeNet) reads a prefix of every
concatenated part: its input channels are given as ``ranges``, the ``(start, stop)`` spans of the full-width
input it uses, in order, and its parameters are gathered with ``index_select`` along the input dimension.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SlimConv2d", "SlimLinear", "SlimBatchNorm2d", "SlimLayerNorm", "SlimLayerNorm2d", "SLIM_TYPES", "to_slim",
           "Ranges", "is_layer_norm_2d", "is_channels_last_layer_norm", "replace_module", "slice_parameters", "set_parameter_count", "unslice_parameters"]

Ranges = Optional[tuple[tuple[int, int], ...]]


class _Gather:
    """The index of the channels in ``ranges``, made once per device."""

    def __init__(self, ranges: tuple[tuple[int, int], ...]) -> None:
        self.ranges = ranges
        self.count = sum(stop - start for start, stop in ranges)
        self._index: dict[torch.device, Tensor] = {}

    def index(self, device: torch.device) -> Tensor:
        index = self._index.get(device)
        if index is None:
            index = torch.cat([torch.arange(start, stop) for start, stop in self.ranges]).to(device)
            self._index[device] = index
        return index


def _gather(layer: nn.Module, ranges: Sequence[tuple[int, int]] | None, count: int) -> Optional[_Gather]:
    if ranges is None:
        return None
    ranges = tuple((int(a), int(b)) for a, b in ranges if b > a)
    cache = layer.__dict__.setdefault("_gathers", {})
    gather = cache.get(ranges)
    if gather is None:
        if len(cache) > 256:
            cache.clear()
        gather = cache[ranges] = _Gather(ranges)
    if gather.count != count:
        raise ValueError(f"ranges {ranges} hold {gather.count} channels, not {count}")
    return gather


class SlimConv2d(nn.Conv2d):
    """A ``Conv2d`` whose input and output channels are the first ``active_in`` / ``active_out``.

    A grouped conv with as many outputs as inputs (depthwise: ``groups == in_channels``; ResNeXt and
    RegNet: groups of ``in_channels // groups`` channels) keeps its group width and runs on the first
    ``active / group_width`` groups, so its input and output counts are equal multiples of the group width.
    Any other grouped conv keeps its group count, and the active counts must be multiples of it.
    """

    def _init_active(self) -> None:
        self.depthwise = self.groups > 1 and self.in_channels == self.out_channels
        self.group_width = self.in_channels // self.groups
        self.active_in = self.in_channels
        self.active_out = self.out_channels
        self.active_groups = self.groups
        self._weight_in = self.in_channels // self.groups
        self._gather: Optional[_Gather] = None

    @property
    def in_ranges(self) -> Ranges:
        """The spans of the full input the active input channels come from (``None``: a prefix)."""
        return None if self._gather is None else self._gather.ranges

    def set_active(self, in_channels: int, out_channels: int, in_ranges: Ranges = None) -> None:
        """Run on ``in_channels`` input channels (the first ones, or those in ``in_ranges``) and the first
        ``out_channels`` output channels."""
        if self.depthwise:
            if in_channels != out_channels:
                raise ValueError(f"depthwise conv needs equal input and output counts, got {in_channels} and {out_channels}")
            if in_channels % self.group_width:
                raise ValueError(f"grouped conv with groups of {self.group_width} channels needs a multiple of "
                                 f"{self.group_width}, got {in_channels}")
            if in_ranges is not None:
                raise ValueError("a depthwise or grouped conv runs on a prefix of its input, not on ranges")
            groups, weight_in = out_channels // self.group_width, self.group_width
        else:
            groups = self.groups
            if in_channels % groups or out_channels % groups:
                raise ValueError(f"grouped conv with {groups} groups needs counts divisible by {groups}, "
                                 f"got {in_channels} and {out_channels}")
            weight_in = in_channels // groups
        if not (0 < in_channels <= self.in_channels and 0 < out_channels <= self.out_channels):
            raise ValueError(f"active counts {in_channels}->{out_channels} outside 1..{self.in_channels}->1..{self.out_channels}")
        if in_ranges is not None and groups != 1:
            raise ValueError("a grouped conv runs on a prefix of its input, not on ranges")
        self._gather = _gather(self, in_ranges, in_channels)
        self.active_in, self.active_out, self.active_groups, self._weight_in = in_channels, out_channels, groups, weight_in

    def active_weight(self) -> Tensor:
        if self._gather is not None:
            return self.weight[: self.active_out, ...].index_select(1, self._gather.index(self.weight.device))
        return self.weight[: self.active_out, : self._weight_in]

    def forward(self, x: Tensor) -> Tensor:
        weight = self.active_weight()
        bias = None if self.bias is None else self.bias[: self.active_out, ...]
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.active_groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.active_groups)


class SlimLinear(nn.Linear):
    """A ``Linear`` on the first ``active_in`` input features, producing the first ``active_out``."""

    def _init_active(self) -> None:
        self.active_in = self.in_features
        self.active_out = self.out_features
        self._gather: Optional[_Gather] = None

    @property
    def in_ranges(self) -> Ranges:
        return None if self._gather is None else self._gather.ranges

    def set_active(self, in_features: int, out_features: int, in_ranges: Ranges = None) -> None:
        """Run on ``in_features`` inputs (the first ones, or those in ``in_ranges``) and the first ``out_features``
        outputs."""
        if not (0 < in_features <= self.in_features and 0 < out_features <= self.out_features):
            raise ValueError(f"active counts {in_features}->{out_features} outside 1..{self.in_features}->1..{self.out_features}")
        self._gather = _gather(self, in_ranges, in_features)
        self.active_in, self.active_out = in_features, out_features

    def active_weight(self) -> Tensor:
        if self._gather is not None:
            return self.weight[: self.active_out, ...].index_select(1, self._gather.index(self.weight.device))
        return self.weight[: self.active_out, : self.active_in]

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias[: self.active_out, ...]
        return F.linear(x, self.active_weight(), bias)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` over the first ``active`` channels: affine parameters and running statistics alike.

    The running statistics are updated in place through views, so calibrating at one config writes the
    prefix of the buffers that config uses.
    """

    def _init_active(self) -> None:
        self.active = self.num_features
        self._gather: Optional[_Gather] = None

    @property
    def ranges(self) -> Ranges:
        return None if self._gather is None else self._gather.ranges

    def set_active(self, channels: int, ranges: Ranges = None) -> None:
        """Normalise ``channels`` channels: the first ones, or those in ``ranges``."""
        if not 0 < channels <= self.num_features:
            raise ValueError(f"active count {channels} outside 1..{self.num_features}")
        self._gather = _gather(self, ranges, channels)
        self.active = channels

    def active_tensors(self) -> tuple[Optional[Tensor], ...]:
        """Weight, bias, running mean and running variance of the active channels (gathered copies with ranges)."""
        tensors = (self.weight, self.bias, self.running_mean, self.running_var)
        if self._gather is None:
            k = self.active
            return tuple(None if t is None else t[:k, ...] for t in tensors)
        reference = next((t for t in tensors if t is not None), None)
        if reference is None:
            return tensors
        index = self._gather.index(reference.device)
        return tuple(None if t is None else t.index_select(0, index) for t in tensors)

    def forward(self, x: Tensor) -> Tensor:
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        if self._gather is not None:
            weight, bias, mean, var = self.active_tensors()
            if not track:
                mean = var = None
            out = F.batch_norm(x, mean, var, weight, bias, use_batch_stats, momentum, self.eps)
            if use_batch_stats and mean is not None:  # the gathered statistics were updated: write them back
                with torch.no_grad():
                    index = self._gather.index(mean.device)
                    self.running_mean.index_copy_(0, index, mean)
                    self.running_var.index_copy_(0, index, var)
            return out
        k = self.active
        return F.batch_norm(
            x,
            self.running_mean[:k, ...] if track and self.running_mean is not None else None,
            self.running_var[:k, ...] if track and self.running_var is not None else None,
            None if self.weight is None else self.weight[:k, ...],
            None if self.bias is None else self.bias[:k, ...],
            use_batch_stats,
            momentum,
            self.eps,
        )


class SlimLayerNorm(nn.LayerNorm):
    """A ``LayerNorm`` over the last dimension (channels-last tensors) normalising its first ``active`` channels.

    Unlike BatchNorm it mixes channels: every output depends on the mean and variance over all active ones.
    """

    def _init_active(self) -> None:
        self.active = self.normalized_shape[0]

    def set_active(self, channels: int) -> None:
        if not 0 < channels <= self.normalized_shape[0]:
            raise ValueError(f"active count {channels} outside 1..{self.normalized_shape[0]}")
        self.active = channels

    def _norm(self, x: Tensor) -> Tensor:
        k = self.active
        weight = None if self.weight is None else self.weight[:k, ...]
        bias = None if self.bias is None else self.bias[:k, ...]
        return F.layer_norm(x, (k,), weight, bias, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x)


class SlimLayerNorm2d(SlimLayerNorm):
    """torchvision's or timm's ``LayerNorm2d`` (a LayerNorm over dim 1 of NCHW tensors: ConvNeXt), on ``active``
    channels."""

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


SLIM_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: SlimConv2d,
    nn.Linear: SlimLinear,
    nn.BatchNorm2d: SlimBatchNorm2d,
    nn.LayerNorm: SlimLayerNorm,
}


def is_layer_norm_2d(module: nn.Module) -> bool:
    """torchvision's or timm's ``LayerNorm2d`` (ConvNeXt: a LayerNorm over dim 1 of NCHW tensors), recognised
    without importing either."""
    kind = type(module)
    return kind.__name__ == "LayerNorm2d" and kind.__module__.startswith(("torchvision.", "timm.")) \
        and isinstance(module, nn.LayerNorm)


def is_channels_last_layer_norm(module: nn.Module) -> bool:
    """``nn.LayerNorm`` itself, or timm's ``LayerNorm`` (the same computation, with an optional fused kernel)."""
    kind = type(module)
    return kind is nn.LayerNorm or (kind.__name__ == "LayerNorm" and kind.__module__.startswith("timm.")
                                    and isinstance(module, nn.LayerNorm))


def to_slim(module: nn.Module) -> nn.Module:
    """Return a slim layer sharing ``module``'s parameters and buffers (the module itself is unchanged).

    Only exact ``Conv2d`` / ``Linear`` / ``BatchNorm2d`` instances are converted; subclasses with their own
    forward are not slim-able and are returned unchanged.
    """
    slim_type = SLIM_TYPES.get(type(module))
    if slim_type is None and is_layer_norm_2d(module):
        slim_type = SlimLayerNorm2d
    elif slim_type is None and is_channels_last_layer_norm(module):
        slim_type = SlimLayerNorm
    if slim_type is None:
        return module
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return module
    slim = slim_type.__new__(slim_type)
    slim.__dict__ = module.__dict__.copy()
    slim._parameters = dict(module._parameters)
    slim._buffers = dict(module._buffers)
    slim._modules = dict(module._modules)
    slim.__dict__["_plain_type"] = type(module)  # what ``to_static`` builds
    slim._init_active()
    return slim


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of ``root``'s submodule ``name`` (a qualified name such as ``layer1.0.conv1``)."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


class _SlicedParameters:
    """Mixin for a module whose forward uses its parameters or buffers directly (ConvNeXt's ``layer_scale``,
    a norm-and-activation layer calling ``F.batch_norm`` on its own statistics, a linear layer calling
    ``F.linear``): reading such a tensor gives its active channels along each sliced dimension, a prefix (a
    view) or, for a concatenation read at a prefix of every part, the gathered spans.

    Buffers gathered from spans are copies: what the forward writes into them (BatchNorm's running
    statistics in training mode) is written back when the call returns.
    """

    def __getattr__(self, name: str):
        value = super().__getattr__(name)  # type: ignore[misc]  # nn.Module finds parameters and buffers here
        specs = self.__dict__.get("_sliced_parameters", {}).get(name)
        if specs is None or not isinstance(value, Tensor):
            return value
        for dim, (size, count, gather) in specs.items():
            if gather is not None:
                index = gather.index(value.device)
                if name in self._buffers:
                    gathered = self.__dict__.get("_gathered")
                    if gathered is not None:
                        value = value.index_select(dim, index)
                        gathered.append((name, dim, index, value))
                        continue
                value = value.index_select(dim, index)
            elif count < size:
                value = value.narrow(dim, 0, count)
        return value

    def __call__(self, *args, **kwargs):
        self.__dict__["_gathered"] = []
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        finally:
            gathered = self.__dict__.pop("_gathered")
            if gathered and self.training:
                with torch.no_grad():
                    for name, dim, index, value in gathered:
                        self._buffers[name].index_copy_(dim, index, value)


_SLICED_CLASSES: dict[type, type] = {}


def slice_parameters(module: nn.Module, name: str, dims: Sequence[int]) -> None:
    """Make ``module.<name>`` (a parameter or buffer) read as its active channels along ``dims``;
    :func:`set_parameter_count` sets them."""
    kind = type(module)
    if not isinstance(module, _SlicedParameters):
        if kind not in _SLICED_CLASSES:
            _SLICED_CLASSES[kind] = type(f"Sliced{kind.__name__}", (_SlicedParameters, kind), {"__module__": __name__})
        module.__dict__["_unsliced_type"] = kind
        module.__class__ = _SLICED_CLASSES[kind]
    tensor = module._parameters[name] if name in module._parameters else module._buffers[name]
    specs = module.__dict__.setdefault("_sliced_parameters", {}).setdefault(name, {})
    for dim in dims:
        specs[dim] = (tensor.shape[dim], tensor.shape[dim], None)


def set_parameter_count(module: nn.Module, name: str, dim: int, count: int, ranges: Ranges = None) -> None:
    """Read ``module.<name>`` at ``count`` channels along ``dim``: the first ones, or those in ``ranges``."""
    specs = module.__dict__["_sliced_parameters"][name]
    size = specs[dim][0]
    specs[dim] = (size, count, _gather(module, ranges, count) if ranges is not None else None)


def unslice_parameters(module: nn.Module) -> nn.Module:
    """Turn a module of :func:`slice_parameters` back into its own class, its parameters and buffers cut to the
    active counts (copies)."""
    if "_sliced_parameters" not in module.__dict__:
        return module
    with torch.no_grad():
        values = {name: getattr(module, name) for name in module.__dict__["_sliced_parameters"]}
        for name, value in values.items():
            if name in module._parameters:
                old = module._parameters[name]
                module._parameters[name] = nn.Parameter(value.detach().clone(), old.requires_grad)
            else:
                module._buffers[name] = value.detach().clone()
    del module.__dict__["_sliced_parameters"]
    module.__class__ = module.__dict__.pop("_unsliced_type")
    return module
