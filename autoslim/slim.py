"""Slim layers: torch layers that run on a prefix of their channels (US-Nets, Yu & Huang 2019, section 3).

Each layer is a subclass of its torch counterpart. The supernet sets the active channel counts from
outside (:meth:`set_active`); ``forward`` only slices the parameters (and BatchNorm running statistics)
to those prefixes and calls the functional op. Slices of a contiguous parameter along its first
dimension are views, so a layer at full width runs exactly the plain op. Every slice is written as a tuple
index (``[:k, ...]``): at the full count torch then makes an alias instead of a slice, whose backward passes
the gradient through instead of scattering it into a fresh full-size zero tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SlimConv2d", "SlimLinear", "SlimBatchNorm2d", "SLIM_TYPES", "to_slim"]


class SlimConv2d(nn.Conv2d):
    """A ``Conv2d`` whose input and output channels are the first ``active_in`` / ``active_out``.

    A depthwise conv (``groups == in_channels == out_channels``) keeps one filter per active channel,
    so its group count follows the active count. Any other grouped conv keeps its group count, and the
    active counts must be multiples of it.
    """

    def _init_active(self) -> None:
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        self.active_in = self.in_channels
        self.active_out = self.out_channels
        self.active_groups = self.groups
        self._weight_in = self.in_channels // self.groups

    def set_active(self, in_channels: int, out_channels: int) -> None:
        """Run on the first ``in_channels`` input and ``out_channels`` output channels."""
        if self.depthwise:
            if in_channels != out_channels:
                raise ValueError(f"depthwise conv needs equal input and output counts, got {in_channels} and {out_channels}")
            groups, weight_in = out_channels, 1
        else:
            groups = self.groups
            if in_channels % groups or out_channels % groups:
                raise ValueError(f"grouped conv with {groups} groups needs counts divisible by {groups}, "
                                 f"got {in_channels} and {out_channels}")
            weight_in = in_channels // groups
        if not (0 < in_channels <= self.in_channels and 0 < out_channels <= self.out_channels):
            raise ValueError(f"active counts {in_channels}->{out_channels} outside 1..{self.in_channels}->1..{self.out_channels}")
        self.active_in, self.active_out, self.active_groups, self._weight_in = in_channels, out_channels, groups, weight_in

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight[: self.active_out, : self._weight_in]
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

    def set_active(self, in_features: int, out_features: int) -> None:
        """Run on the first ``in_features`` inputs and ``out_features`` outputs."""
        if not (0 < in_features <= self.in_features and 0 < out_features <= self.out_features):
            raise ValueError(f"active counts {in_features}->{out_features} outside 1..{self.in_features}->1..{self.out_features}")
        self.active_in, self.active_out = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias[: self.active_out, ...]
        return F.linear(x, self.weight[: self.active_out, : self.active_in], bias)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` over the first ``active`` channels: affine parameters and running statistics alike.

    The running statistics are updated in place through views, so calibrating at one config writes the
    prefix of the buffers that config uses.
    """

    def _init_active(self) -> None:
        self.active = self.num_features

    def set_active(self, channels: int) -> None:
        """Normalise the first ``channels`` channels."""
        if not 0 < channels <= self.num_features:
            raise ValueError(f"active count {channels} outside 1..{self.num_features}")
        self.active = channels

    def forward(self, x: Tensor) -> Tensor:
        k = self.active
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
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


SLIM_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: SlimConv2d,
    nn.Linear: SlimLinear,
    nn.BatchNorm2d: SlimBatchNorm2d,
}


def to_slim(module: nn.Module) -> nn.Module:
    """Return a slim layer sharing ``module``'s parameters and buffers (the module itself is unchanged).

    Only exact ``Conv2d`` / ``Linear`` / ``BatchNorm2d`` instances are converted; subclasses with their own
    forward are not slim-able and are returned unchanged.
    """
    slim_type = SLIM_TYPES.get(type(module))
    if slim_type is None:
        return module
    slim = slim_type.__new__(slim_type)
    slim.__dict__ = module.__dict__.copy()
    slim._parameters = dict(module._parameters)
    slim._buffers = dict(module._buffers)
    slim._modules = dict(module._modules)
    slim._init_active()
    return slim
