"""The static network of a config: a plain ``nn.Module`` holding copies of the supernet's weights, sliced.

``materialize(supernet, config)`` returns the model's own class with every slim layer replaced by the
plain torch layer of the active width (:func:`to_static`), so it runs and saves without autoslim. For the
same config and BatchNorm statistics its output equals the supernet's.
"""

from __future__ import annotations

import copy
import inspect
from typing import Mapping

import torch
from torch import nn

from .layers import SlimBatchNorm2d, SlimConv2d, SlimLayerNorm, SlimLinear, replace_module, unslice_parameters
from .supernet import Supernet

__all__ = ["materialize", "to_static"]


def materialize(supernet: Supernet, config: Mapping[str, int] | None = None) -> nn.Module:
    """A plain ``nn.Module`` with copies of ``supernet``'s weights sliced to ``config`` (default: current).

    The supernet itself is left at the config it had.
    """
    previous = supernet.config
    if config is not None:
        supernet.set_config(supernet.validate_config(config))
    try:
        static = copy.deepcopy(supernet.model)
    finally:
        supernet.set_config(previous)
    for module in static.modules():
        unslice_parameters(module)  # per-channel parameters used directly: cut to the config, own class back
    for name, module in list(static.named_modules()):
        plain = to_static(module)
        if plain is not module:
            replace_module(static, name, plain)
    return static


@torch.no_grad()
def to_static(module: nn.Module) -> nn.Module:
    """The plain layer equal to a slim layer at its active counts (other modules are returned as they are)."""
    factory = {"device": None, "dtype": None}
    if isinstance(module, SlimConv2d):
        factory = {"device": module.weight.device, "dtype": module.weight.dtype}
        plain = nn.Conv2d(module.active_in, module.active_out, module.kernel_size, module.stride, module.padding,
                          module.dilation, module.active_groups, module.bias is not None, module.padding_mode,
                          **factory)
        plain.weight.copy_(module.active_weight())
        if module.bias is not None:
            plain.bias.copy_(module.bias[: module.active_out])
    elif isinstance(module, SlimLinear):
        factory = {"device": module.weight.device, "dtype": module.weight.dtype}
        plain = nn.Linear(module.active_in, module.active_out, module.bias is not None, **factory)
        plain.weight.copy_(module.active_weight())
        if module.bias is not None:
            plain.bias.copy_(module.bias[: module.active_out])
    elif isinstance(module, SlimBatchNorm2d):
        k = module.active
        reference = module.weight if module.weight is not None else module.running_mean
        if reference is not None:
            factory = {"device": reference.device, "dtype": reference.dtype}
        plain = nn.BatchNorm2d(k, module.eps, module.momentum, module.affine, module.track_running_stats, **factory)
        weight, bias, mean, var = module.active_tensors()
        if module.affine:
            plain.weight.copy_(weight)
            plain.bias.copy_(bias)
        if module.track_running_stats:
            plain.running_mean.copy_(mean)
            plain.running_var.copy_(var)
            plain.num_batches_tracked.copy_(module.num_batches_tracked)
    elif isinstance(module, SlimLayerNorm):
        k = module.active
        factory = {} if module.weight is None else {"device": module.weight.device, "dtype": module.weight.dtype}
        plain_type = module.__dict__["_plain_type"]
        # timm's norms name nn.LayerNorm's `elementwise_affine` `affine` and pass the rest through
        affine = "affine" if "affine" in inspect.signature(plain_type.__init__).parameters else "elementwise_affine"
        plain = plain_type(k, eps=module.eps, bias=module.bias is not None, **{affine: module.elementwise_affine},
                           **factory)
        if module.weight is not None:
            plain.weight.copy_(module.weight[:k])
        if module.bias is not None:
            plain.bias.copy_(module.bias[:k])
    else:
        return module
    plain.train(module.training)
    return plain
