"""The analytic cost model equals FlopCounterMode / 2 and the static model's parameter count, exactly."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from autoslim.network.static import materialize
from autoslim.spaces import build_supernet, list_spaces, load_space


def _measured(static, in_channels, size):
    with FlopCounterMode(display=False) as counter:
        static(torch.zeros(1, in_channels, size, size, device="meta"))
    return counter.get_total_flops() // 2, sum(p.numel() for p in static.parameters())


@pytest.mark.parametrize("name", list_spaces())
def test_cost_equals_flop_counter_on_random_configs(name):
    space = load_space(name)
    supernet = build_supernet(space).to("meta").eval()  # meta tensors: shapes only, no compute
    rng = random.Random(name)
    configs = [supernet.largest_config(), supernet.smallest_config()] + [supernet.sample_config(rng) for _ in range(20)]
    for config in configs:
        static = materialize(supernet, config)
        macs, params = _measured(static, space.in_channels, space.input_size)
        cost = supernet.cost(config)
        assert (cost.macs, cost.params) == (macs, params), config


@pytest.mark.parametrize("name,size", [("mobilenet_v2", 160), ("resnet20_cifar", 40), ("digits_cnn", 16)])
def test_cost_at_another_input_size(name, size):
    space = load_space(name)
    supernet = build_supernet(space).to("meta").eval()
    config = supernet.sample_config(random.Random(0))
    macs, _ = _measured(materialize(supernet, config), space.in_channels, size)
    assert supernet.cost(config, input_size=size).macs == macs
    assert supernet.cost(config).macs != macs  # the traced size is still the default


@pytest.mark.parametrize("name,width,macs", [
    ("mobilenet_v2", 1.0, 300_774_272), ("mobilenet_v2", 0.75, 209_069_792), ("mobilenet_v2", 0.5, 97_131_840),
    ("mobilenet_v2", 0.35, 59_285_808), ("resnet50", 1.0, 4_089_184_256), ("mnasnet", 1.0, 314_415_872),
    ("mnasnet", 0.5, 104_455_968), ("resnet20_cifar", 1.0, 40_813_184), ("mobilenet_v2_cifar", 1.0, 87_976_448),
])
def test_uniform_width_is_the_published_network(name, width, macs):
    supernet = build_supernet(load_space(name))
    assert supernet.cost(supernet.uniform_config(width)).macs == macs


def test_mobilenet_v1_is_569m_at_width_1():
    supernet = build_supernet(load_space("mobilenet_v1"))
    assert round(supernet.cost(supernet.uniform_config(1.0)).macs / 1e6) == 569


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.35])
@pytest.mark.parametrize("name,builder,arg", [("mobilenet_v2", "mobilenet_v2", "width_mult"), ("mnasnet", "MNASNet", "alpha")])
def test_uniform_width_matches_torchvision_width_models(name, builder, arg, width):
    import torchvision

    supernet = build_supernet(load_space(name))
    reference = getattr(torchvision.models, builder)(**{arg: width}).to("meta").eval()
    macs, params = _measured(reference, 3, 224)
    assert tuple(supernet.cost(supernet.uniform_config(width))) == (macs, params)


def test_mobilenet_v2_keeps_1280_last_channels_below_width_1():
    supernet = build_supernet(load_space("mobilenet_v2"))
    last = supernet.units[-2]  # the 1x1 conv before the classifier
    assert last.maximum == 1920
    assert supernet.uniform_config(0.5)[last.name] == 1280
    assert supernet.uniform_config(1.5)[last.name] == 1920
