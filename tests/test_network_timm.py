"""timm's CNNs convert to supernets unmodified (issue 19), and so does a user's own norm-and-activation layer.

For each model: the cost at the largest, the smallest and a random config equals FlopCounterMode / 2 (and the
parameter count) of the exported static network; random configs run forward and backward in training mode;
``materialize`` gives the supernet's output; at least the expected share of units stays slimmable.
"""

import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autoslim.network.static import materialize
from autoslim.network.supernet import convert

timm = pytest.importorskip("timm")

# model, least share of slimmable units; fast enough for every run (the whole table is in the slow test below)
FAST = [
    ("mobilenetv2_050", 0.9),  # inverted residuals built from BatchNormAct2d
    ("mobilenetv3_small_050", 0.9),  # a head of conv after global pool, flatten and timm's Linear
    ("lcnet_050", 0.85),
    ("regnety_002", 0.9),
    ("convnext_atto", 0.85),  # timm's LayerNorm2d, and a layer scale reshaped before it scales the residual branch
]

# family, model, least share of slimmable units (below 0.8: the true limit that freezes the rest)
FAMILIES = [
    ("ResNet", "resnet18", 0.85),
    ("ResNet-D", "resnet18d", 0.85),
    ("SE-ResNet", "seresnet18", 0.85),
    ("ResNeXt", "resnext26ts", 0.85),
    ("EfficientNet", "efficientnet_b0", 0.9),
    ("MobileNetV2", "mobilenetv2_100", 0.9),
    ("MobileNetV3", "mobilenetv3_large_100", 0.9),
    ("LCNet", "lcnet_050", 0.85),
    ("TinyNet", "tinynet_e", 0.9),
    ("RegNetY", "regnety_002", 0.9),
    ("RegNetX", "regnetx_002", 0.9),
    ("DenseNet", "densenet121", 0.95),
    ("VoVNet", "ese_vovnet19b_dw", 0.9),
    ("GENet", "gernet_s", 0.9),
    ("RepVGG", "repvgg_a0", 0.7),  # a plain stack of five stages: 5 of 7 units (image and outputs frozen)
    ("MobileOne", "mobileone_s0", 0.6),  # likewise: 4 of 6
    ("CSPResNet", "cspresnet50", 0.7),  # each cross-stage block splits its input along the channels
    ("ConvNeXt", "convnext_atto", 0.85),
    ("VGG", "vgg11", 0.6),  # its head (ConvMlp) has control flow: a leaf module, called whole
    ("EfficientViT", "efficientvit_b0", 0.75),  # its attention (LiteMLA) likewise
]


def _measured(model, size):
    model = copy.deepcopy(model).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def _check(model, share, size=64):
    supernet = convert(model, input_size=size)
    slimmable = len(supernet.slimmable_units) / len(supernet.layer_units)
    assert slimmable >= share, [(u.name, u.frozen) for u in supernet.frozen_units]
    assert all(unit.frozen for unit in supernet.frozen_units)
    x = torch.randn(2, 3, size, size)
    configs = (supernet.largest_config(), supernet.smallest_config(), supernet.sample_config(random.Random(0)))
    for config in configs:
        supernet.set_config(config)
        supernet.train()
        supernet.zero_grad(set_to_none=True)
        supernet(x).sum().backward()
        grads = [p.grad for p in supernet.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        supernet.eval()
        static = materialize(supernet, config).eval()
        with torch.no_grad():
            expected, got = supernet(x), static(x)
        assert expected.std() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert tuple(supernet.cost(config)) == _measured(static, size)
    return supernet


@pytest.mark.parametrize("name,share", FAST, ids=[f[0] for f in FAST])
def test_timm_model_converts(name, share):
    supernet = _check(timm.create_model(name, pretrained=False, num_classes=10), share)
    assert supernet.cost(supernet.smallest_config()).macs < supernet.cost(supernet.largest_config()).macs


@pytest.mark.slow
@pytest.mark.parametrize("family,name,share", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_timm_family_converts(family, name, share):
    supernet = _check(timm.create_model(name, pretrained=False, num_classes=10), share)
    assert supernet.cost(supernet.smallest_config()).macs < supernet.cost(supernet.largest_config()).macs


def test_timm_convnext_slices_its_norms_and_layer_scale_and_sorts_exactly():
    from test_network_ordering import _assert_same_function

    supernet = convert(timm.create_model("convnext_atto", pretrained=False, num_classes=10), input_size=32)
    assert sorted(u.frozen for u in supernet.frozen_units) == ["image channels", "network outputs"]
    scales = {use.owner + "." + use.name for use in supernet.trace.parameters}
    assert "stages.0.blocks.0.gamma" in scales  # `gamma.reshape(1, -1, 1, 1)`: sliced with the residual stream
    _assert_same_function(supernet, 32)


class _ChannelsLast(nn.Module):
    """timm's channels-last LayerNorm between two convs, as ConvNeXt blocks without the conv MLP use it."""

    def __init__(self):
        super().__init__()
        from timm.layers import LayerNorm

        self.a, self.norm, self.b = nn.Conv2d(3, 16, 3, padding=1), LayerNorm(16), nn.Conv2d(16, 8, 1)
        self.scale = nn.Parameter(torch.ones(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.norm(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.b(x) * self.scale.view(1, -1, 1, 1)
        return self.fc(x.mean((2, 3)))


class _NamedReshape(_ChannelsLast):
    def forward(self, x):  # names the channel count: it would break at another width
        x = self.b(self.norm(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)) * self.scale.view(1, 8, 1, 1)
        return self.fc(x.mean((2, 3)))


def test_timm_channels_last_layer_norm_and_a_reshaped_scale_are_sliced():
    supernet = _check(_ChannelsLast(), 1.0 / 2, size=8)
    assert {u.name: u.frozen for u in supernet.layer_units} == {"input": "image channels", "a": None, "b": None,
                                                                 "fc": "network outputs"}
    frozen = {u.name: u.frozen for u in convert(_NamedReshape(), input_size=8).layer_units}
    assert frozen["b"] and "mixes the channels" in frozen["b"] and frozen["a"] is None


# A held-out set: timm CNNs that neither the issue nor the coverage table names, checked the same way. A unit
# may be frozen only for a true limit of prefix slicing, never for an operation the tracer does not know.
HELD_OUT = ["mnasnet_100", "spnasnet_100", "fbnetc_100", "semnasnet_075", "efficientnet_lite0",
            "ecaresnet26t",  # ECA's gate: a conv along the channels, viewed as (N, 1, C)
            "resnetv2_50", "selecsls42b", "skresnet18", "hgnetv2_b0", "ghostnetv2_100", "mobilenetv4_conv_small"]
TRUE_LIMITS = ("image channels", "network outputs", "split along the channels", "splits the channels into groups",
               "(channel shuffle)", "takes a fixed range of the channels", "grouped conv")


@pytest.mark.slow
@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_timm_model_converts_exactly(name):
    supernet = _check(timm.create_model(name, pretrained=False, num_classes=10), 0.0)
    reasons = {reason for unit in supernet.frozen_units for reason in unit.frozen.split("; ")}
    assert all(any(limit in reason for limit in TRUE_LIMITS) for reason in reasons), reasons
    assert supernet.slimmable_units, name


# -- the same rules for a user's own layers --------------------------------------------------------------------

class NormAct(nn.BatchNorm2d):
    """A norm-and-activation layer that calls F.batch_norm itself (as timm's BatchNormAct2d does)."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         0.1 if self.momentum is None else self.momentum, self.eps)
        return F.hardswish(x)


class Head(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Pointwise(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias)


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn = NormAct(32)
        self.left = nn.Conv2d(32, 24, 3, padding=1)
        self.right = Pointwise(32, 16, 1)
        self.merge = NormAct(40)  # normalises a concatenation: each part is read at its own prefix
        self.gn_conv = nn.Conv2d(40, 48, 1)
        self.gn = nn.GroupNorm(4, 48)
        self.head = Head(48, 10)

    def forward(self, x):
        x = self.bn(self.stem(x))
        x = self.merge(torch.cat([self.left(x), self.right(x)], 1))
        x = F.relu(self.gn(self.gn_conv(x)))
        return self.head(x.mean((2, 3)))


def test_user_norm_act_and_functional_layers_are_slimmable():
    supernet = _check(UserNet(), 0.6, size=32)
    units = {u.name: u for u in supernet.units}
    assert {"stem", "left", "right", "gn_conv"} <= {u.name for u in supernet.slimmable_units}
    assert "bn" in units["stem"].carriers and "merge" in units["left"].carriers and "merge" in units["right"].carriers
    assert units["gn_conv"].multiple == 4  # GroupNorm keeps its 4 groups
    assert all(c % 4 == 0 for c in units["gn_conv"].choices)
    supernet.set_config(supernet.smallest_config())
    assert supernet.model.merge.running_mean.shape[0] < 40  # the statistics are read at the active channels


def test_functional_batch_norm_on_a_concatenation_updates_its_statistics_in_training():
    supernet = convert(UserNet(), input_size=32)
    config = supernet.smallest_config()
    supernet.set_config(config)
    merge = supernet.model.merge
    before = merge._buffers["running_mean"].clone()
    supernet.train()(torch.randn(4, 3, 32, 32))
    after = merge._buffers["running_mean"]
    left, right = config["left"], config["right"]
    used = torch.zeros(40, dtype=torch.bool)
    used[:left] = True
    used[24:24 + right] = True
    assert not torch.equal(after[used], before[used])  # the gathered statistics were written back
    assert torch.equal(after[~used], before[~used])


class _TimmEca(nn.Module):
    """timm's ECA and circular ECA gates (a conv along the channels, viewed as (N, 1, C)) on a conv's channels."""

    def __init__(self):
        super().__init__()
        from timm.layers import CecaModule, EcaModule

        self.a, self.eca = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)), EcaModule(16)
        self.b, self.ceca = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24)), CecaModule(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.ceca(torch.relu(self.b(self.eca(torch.relu(self.a(x))))))
        return self.fc(x.mean((2, 3)))


def test_timm_eca_gates_are_slimmable_and_cost_exactly():
    supernet = _check(_TimmEca(), 0.5, size=8)
    assert {u.name for u in supernet.slimmable_units} == {"a.0", "b.0"}
    assert [c.module for c in supernet.trace.calls if c.kind == "chconv"] == ["eca.conv", "ceca.conv"]


# -- the command line: timm:NAME ------------------------------------------------------------------------------

def _cli(*args):
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


def test_timm_space_cost_is_exact_and_units_are_slimmable():
    from autoslim.spaces import build_supernet, configure_space, load_space

    result = _cli("cost", "timm:mobilenetv3_small_050", "--width", "1.0", "--num-classes", "10", "--input-size", "64",
                  "--json")
    assert result.exit_code == 0, result.output
    reported = json.loads(result.output)
    supernet = build_supernet(configure_space(load_space("timm:mobilenetv3_small_050"), num_classes=10, input_size=64))
    static = materialize(supernet, supernet.largest_config())
    assert (reported["macs"], reported["params"]) == _measured(static, 64)
    result = _cli("spaces", "--units", "timm:mobilenetv2_050", "--num-classes", "10", "--input-size", "64")
    assert result.exit_code == 0, result.output
    assert "unsupported" not in result.output and "blocks.1.0.conv_pw" in result.output


def test_unknown_timm_model_and_missing_timm_are_one_line(monkeypatch):
    result = _cli("cost", "timm:no_such_net", "--width", "1.0")
    assert result.exit_code == 1 and "unknown timm model" in result.output
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    result = _cli("cost", "timm:resnet18", "--width", "1.0")
    assert result.exit_code == 1 and "pip install 'autoslim[timm]'" in result.output


# -- multi-output backbones -----------------------------------------------------------------------------------

def test_features_only_backbone_converts_costs_materializes_and_exports(tmp_path):
    from torch.utils._pytree import tree_leaves

    from autoslim.export import export_program, export_torchscript

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, features_only=True)
    supernet = convert(model, input_size=64)
    assert len(supernet.slimmable_units) / len(supernet.layer_units) >= 0.7
    x = torch.randn(2, 3, 64, 64)
    config = supernet.sample_config(random.Random(1))
    supernet.set_config(config)
    supernet.train()
    sum(o.sum() for o in supernet(x)).backward()
    supernet.eval()
    static = materialize(supernet, config).eval()
    with torch.no_grad():
        expected, got = supernet(x), static(x)
    assert len(expected) == 5
    for e, g, channels in zip(expected, got, model.feature_info.channels()):
        assert e.shape[1] == channels  # the outputs' channels stay fixed
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    assert tuple(supernet.cost(config)) == _measured(static, 64)
    export_torchscript(static, x, expected, tmp_path / "model.pt")
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    for e, g in zip(expected, tree_leaves(loaded(x))):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    export_program(static, x, expected, tmp_path / "model.pt2")
