"""A fake timer for the latency tests: deterministic milliseconds, so that predictions can be checked exactly.

A layer takes ``1e-5 * weight elements * input positions * batch`` ms; a whole network takes twice the sum of its conv
and linear layers' times, on the inputs they see, plus 0.5 ms. The latency model's fit should therefore find
``lookup = 2``, ``activations = 0``, ``intercept = 0.5`` and predict every network exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autoslim.latency import LatencyKey

NETWORK_SCALE, NETWORK_FIXED_MS = 2.0, 0.5


def layer_ms(layer: nn.Module, shape) -> float:
    channel_dim = len(shape) - 1 if isinstance(layer, nn.Linear) else 1
    positions = math.prod(s for i, s in enumerate(shape) if i not in (0, channel_dim))
    return 1e-5 * layer.weight.numel() * positions * shape[0]


class FakeTimer:
    """Implements :class:`autoslim.latency.Timer` without timing anything; counts its calls."""

    def __init__(self, key: LatencyKey = LatencyKey(), offset_ms: float = 0.0) -> None:
        self.key = key
        self.offset_ms = offset_ms  # added to whole networks only: a "measurement" the model cannot know
        self.layer_calls = 0
        self.network_calls = 0

    def layers(self, calls, on_timed=None) -> list[float]:
        self.layer_calls += len(calls)
        return [layer_ms(layer, shape) for layer, shape in calls]

    def networks(self, networks, shape, on_timed=None) -> list[float]:
        self.network_calls += len(networks)
        return [self._network(network, shape) for network in networks]

    def _network(self, network: nn.Module, shape) -> float:
        total = []

        def hook(module, inputs):
            total.append(layer_ms(module, tuple(inputs[0].shape)))

        handles = [m.register_forward_pre_hook(hook) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            with torch.no_grad():
                network.eval()(torch.zeros(shape))
        finally:
            for handle in handles:
                handle.remove()
        return NETWORK_SCALE * sum(total) + NETWORK_FIXED_MS + self.offset_ms


class NoTimer:
    """A timer that must not be used (a cached model should have been read)."""

    def __init__(self, key: LatencyKey = LatencyKey()) -> None:
        self.key = key

    def layers(self, calls, on_timed=None):
        raise AssertionError("a layer was timed although a fresh model was cached")

    def networks(self, networks, shape, on_timed=None):
        raise AssertionError("a network was timed although a fresh model was cached")
