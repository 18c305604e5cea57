"""materialize: a plain model whose output equals the supernet's at that config."""

import random

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from autoslim.network.layers import SlimBatchNorm2d, SlimConv2d, SlimLinear
from autoslim.network.static import materialize
from autoslim.spaces import build_supernet, list_spaces, load_space


def _randomise_bn(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


@pytest.mark.parametrize("name", list_spaces())
def test_materialize_equals_supernet(name):
    space = load_space(name)
    size = min(space.input_size, 64)
    supernet = build_supernet(space, num_classes=10, input_size=size)
    _randomise_bn(supernet)
    supernet.eval()
    x = torch.randn(2, space.in_channels, size, size)
    rng = random.Random(0)
    for config in (supernet.smallest_config(), supernet.sample_config(rng), supernet.uniform_config(min(1.0, supernet.width_mult))):
        static = materialize(supernet, config).eval()
        assert not any(isinstance(m, (SlimConv2d, SlimLinear, SlimBatchNorm2d)) for m in static.modules())
        supernet.set_config(config)
        with torch.no_grad():
            assert_close(static(x), supernet(x), rtol=1e-4, atol=1e-4)
        assert sum(p.numel() for p in static.parameters()) == supernet.cost(config).params


def test_materialize_keeps_the_supernet_config():
    supernet = build_supernet(load_space("resnet20_cifar"))
    config = supernet.sample_config(random.Random(3))
    supernet.set_config(config)
    materialize(supernet, supernet.smallest_config())
    assert supernet.config == config


def test_static_model_is_independent_of_supernet():
    supernet = build_supernet(load_space("digits_cnn"))
    static = materialize(supernet, supernet.smallest_config())
    with torch.no_grad():
        for p in supernet.parameters():
            p.zero_()
    assert any(p.abs().sum() > 0 for p in static.parameters())
