"""Several channel configs trained as one slimmable network with switchable BatchNorm (S-Nets, section 3.2).

Slimmable networks (Yu et al. 2019) train a fixed set of widths together: convolutions and the classifier
share their weights (every config uses a prefix of the channels), while each config keeps BatchNorm
layers of its own, because the mean and variance a channel sees depend on how many channels feed it.
AutoSlim's released models were trained this way from their searched configs.

:class:`JointNetwork` turns a supernet and a list of configs into such a network: its slim BatchNorm
layers become :class:`SwitchableBatchNorm2d` layers holding one ``nn.BatchNorm2d`` per config, and
:meth:`JointNetwork.select` switches the shared layers and the BatchNorm layers to one config.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

from torch import Tensor, nn

from ..network.layers import SlimBatchNorm2d, replace_module
from ..network.static import materialize, to_static
from ..network.supernet import Supernet

__all__ = ["SwitchableBatchNorm2d", "JointNetwork"]


class SwitchableBatchNorm2d(nn.Module):
    """One ``nn.BatchNorm2d`` per config; ``index`` (set from outside) picks the one that runs.

    Attributes:
        bns: the BatchNorm layers, ``bns[i]`` sized for config ``i``.
        index: the config that runs.
    """

    def __init__(self, layers: Sequence[nn.BatchNorm2d]) -> None:
        super().__init__()
        self.bns = nn.ModuleList(layers)
        self.index = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.bns[self.index](x)


class JointNetwork(nn.Module):
    """Configs of one supernet sharing convolution and linear weights, each with its own BatchNorm layers.

    The supernet is copied, not modified. Every per-config BatchNorm layer starts as the supernet's slim
    BatchNorm sliced to that config (parameters and statistics), so a fresh supernet gives fresh layers.

    Attributes:
        supernet: the copy whose slim BatchNorm layers were replaced by switchable ones.
        configs: the validated configs, in the order given.
        index: the config that runs (see :meth:`select`).
    """

    def __init__(self, supernet: Supernet, configs: Sequence[Mapping[str, int]]) -> None:
        super().__init__()
        if not configs:
            raise ValueError("a joint network needs at least one config")
        supernet = copy.deepcopy(supernet)
        self.configs = [supernet.validate_config(config) for config in configs]
        slim = [(name, module) for name, module in supernet.model.named_modules()
                if isinstance(module, SlimBatchNorm2d)]
        layers: dict[str, list[nn.BatchNorm2d]] = {name: [] for name, _ in slim}
        for config in self.configs:
            supernet.set_config(config)
            for name, module in slim:
                layers[name].append(to_static(module))
        self.switches: list[SwitchableBatchNorm2d] = []
        for name, _ in slim:
            switch = SwitchableBatchNorm2d(layers[name])
            replace_module(supernet.model, name, switch)
            self.switches.append(switch)
        self.supernet = supernet
        self.index = 0
        self.select(0)

    def select(self, index: int) -> None:
        """Run config ``index``: its channel counts in the shared layers, its own BatchNorm layers."""
        if not 0 <= index < len(self.configs):
            raise ValueError(f"config index {index} is outside 0..{len(self.configs) - 1}")
        self.supernet.set_config(self.configs[index])
        for switch in self.switches:
            switch.index = index
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x)

    def materialize(self, index: int) -> nn.Module:
        """A plain ``nn.Module`` of config ``index`` with copies of its weights and BatchNorm layers.

        :func:`autoslim.network.static.materialize` of the shared layers at that config, each switchable BatchNorm
        replaced by the config's own. Its output equals this network's after ``select(index)``, in eval mode.
        The network is left at the config it ran before.
        """
        previous = self.index
        self.select(index)
        try:
            static = materialize(self.supernet)
        finally:
            self.select(previous)
        for name, module in list(static.named_modules()):
            if isinstance(module, SwitchableBatchNorm2d):
                replace_module(static, name, module.bns[index])
        return static
