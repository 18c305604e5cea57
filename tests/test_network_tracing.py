"""Channel units traced from plain models: ResNet stages, MobileNetV2 depthwise and residual ties, MNASNet,
squeeze-and-excitation gates, and what gets frozen (with a reason)."""

import pytest
import torch
import torchvision
from torch import nn

from autoslim.network.static import materialize
from autoslim.network.supernet import convert
from autoslim.network.tracing import trace_model


def _by_name(trace):
    return {unit.name: unit for unit in trace.units}


def test_resnet_stage_shares_one_unit():
    trace = trace_model(torchvision.models.resnet18(), input_size=64)
    units = _by_name(trace)
    stage1 = units["conv1"]  # the stem's output is added in every block of layer1
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2"} <= set(stage1.producers)
    stage2 = units["layer2.0.conv2"]
    assert set(stage2.producers) == {"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"}
    assert "layer2.1.conv1" in stage2.consumers and "fc" in units["layer4.0.conv2"].consumers
    assert units["input"].frozen == "image channels"
    assert "network outputs" in units["fc"].frozen
    slimmable = [u for u in trace.units if u.frozen is None]
    assert len(slimmable) == 4 + 8  # one unit per stage plus the inner conv of each of the 8 blocks


def test_mobilenet_v2_depthwise_carries_expansion_and_residuals_tie():
    units = _by_name(trace_model(torchvision.models.mobilenet_v2(), input_size=64))
    expansion = units["features.2.conv.0.0"]
    assert "features.2.conv.1.0" in expansion.carriers  # the depthwise conv does not start a unit
    assert "features.2.conv.1.0" not in units  # ... and names none
    residual = units["features.2.conv.2"]  # the 24-channel stage: blocks 2 and 3 are added together
    assert set(residual.producers) == {"features.2.conv.2", "features.3.conv.2"}
    assert residual.maximum == 24 and residual.frozen is None
    assert units["features.18.0"].maximum == 1280


def test_mnasnet_units():
    trace = trace_model(torchvision.models.mnasnet1_0(), input_size=64)
    units = _by_name(trace)
    assert set(units["layers.8.0.layers.6"].producers) == {"layers.8.0.layers.6", "layers.8.1.layers.6", "layers.8.2.layers.6"}
    assert "layers.3" in units["layers.0"].carriers  # the stem's depthwise conv
    assert sum(u.frozen is None for u in trace.units) == 25


class _UserNet(nn.Module):
    """A residual block, a concatenation and a squeeze-and-excitation gate."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 8, 1)
        self.c = nn.Conv2d(16, 8, 1)
        self.merge = nn.Conv2d(16, 24, 1)
        self.se1 = nn.Conv2d(24, 6, 1)
        self.se2 = nn.Conv2d(6, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.a(x)
        y = torch.cat([self.b(x), self.c(x)], dim=1)
        y = self.merge(y)
        gate = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = y * gate
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_user_model_residual_concat_and_gate():
    supernet = convert(_UserNet(), input_size=16)
    units = {u.name: u for u in supernet.units}
    assert set(units["stem"].producers) == {"stem", "a"}  # residual tie
    assert units["b"].frozen is None and units["c"].frozen is None  # the concatenated parts stay slimmable
    index = supernet.trace.unit_index()
    merge = next(c for c in supernet.trace.calls if c.module == "merge")
    assert merge.inputs == ((index["b"], 1), (index["c"], 1))  # merge reads a prefix of each part
    assert set(units["merge"].producers) == {"merge", "se2"}  # the gate multiplies channel by channel
    assert units["merge"].frozen is None and units["se1"].frozen is None
    supernet.set_config(supernet.smallest_config())
    out = supernet(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5)


def test_reshape_that_names_channels_is_frozen():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)
            self.fc = nn.Linear(16 * 4 * 4, 4)

        def forward(self, x):
            return self.fc(self.conv(x).view(x.size(0), 16 * 4 * 4))

    units = {u.name: u for u in trace_model(Net(), input_size=6).units}
    assert units["conv"].frozen is not None


def test_channel_shuffle_freezes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            x = self.conv(x)
            n, c, h, w = x.shape
            return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w).mean((2, 3))

    units = {u.name: u for u in trace_model(Net(), input_size=4).units}
    assert "channel shuffle" in units["conv"].frozen


class _Reductions(nn.Module):
    """A spatial attention map (mean and max over the channels), a sum over split groups and a spatial crop."""

    def __init__(self, fixed_range=False):
        super().__init__()
        self.fixed_range = fixed_range
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(2, 1, 3, padding=1)
        self.b = nn.Conv2d(8, 12, 1)
        self.c = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(3 if fixed_range else 6, 4)

    def forward(self, x):
        x = self.a(x)
        attention = torch.cat([x.mean(1, keepdim=True), x.amax(dim=1, keepdim=True)], 1)
        x = self.b(x * torch.sigmoid(self.gate(attention)))
        n, c, h, w = x.shape
        x = self.c(x.reshape(n, 2, c // 2, h, w).sum(dim=1))  # split attention: 12 channels as 2 groups of 6
        x = x[:, :3] if self.fixed_range else x[:, :, 1:, :]
        return self.fc(x.sum((2, 3)))


def test_reductions_crops_and_group_splits():
    supernet = convert(_Reductions(), input_size=6)
    units = {u.name: u.frozen for u in supernet.layer_units}
    assert units["a"] is None  # reduced over its channels for the attention map: any width still works
    assert units["c"] is None  # summed over space and cropped in space
    assert "splits the channels into groups" in units["b"]
    for config in (supernet.largest_config(), supernet.smallest_config()):
        supernet.set_config(config)
        supernet.eval()
        static = materialize(supernet, config).eval()
        x = torch.randn(2, 3, 6, 6)
        torch.testing.assert_close(static(x), supernet(x))
    fixed = {u.name: u.frozen for u in convert(_Reductions(fixed_range=True), input_size=6).layer_units}
    assert "takes a fixed range of the channels" in fixed["c"]


class _ControlFlowHead(nn.Module):
    """A head with control flow on the input size, which torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, 5)

    def forward(self, x):
        if x.shape[-1] < 4:
            x = torch.nn.functional.interpolate(x, size=4)
        return self.fc(self.conv(x).mean((2, 3)))


class _WithHead(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), head

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x))))


class _MarkedHead(_ControlFlowHead):
    autoslim_leaf = True


def test_a_leaf_module_is_called_whole_with_its_cost_counted():
    from torch.utils.flop_counter import FlopCounterMode

    import autoslim

    class Head(_ControlFlowHead):  # a class of its own: the registry is process-wide
        pass

    with pytest.raises(ValueError, match="cannot trace"):
        convert(_WithHead(Head()), input_size=8)
    assert autoslim.leaf_module(Head) is Head
    for head in (Head(), _MarkedHead()):
        supernet = convert(_WithHead(head), input_size=8)
        units = {u.name: u.frozen for u in supernet.layer_units}
        assert units["a"] is None and "is a leaf module (not traced)" in units["b"]
        for size in (8, 2):  # at 2x2 the head interpolates: its MACs are measured at each input size
            config = supernet.smallest_config()
            supernet.set_config(config)
            static = materialize(supernet, config).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                static(torch.zeros(1, 3, size, size))
            assert supernet.cost(config, input_size=size).macs == counter.get_total_flops() // 2
            assert supernet.cost(config).params == sum(p.numel() for p in static.parameters())
    with pytest.raises(TypeError, match="nn.Module class"):
        autoslim.leaf_module(len)


class _Gates(nn.Module):
    """Selective-kernel branches stacked, weighted by a softmax over them and summed, a learnable scalar, spatial padding, an SE gate through
    view(N, C, 1, 1) and expand_as, and an op FlopCounterMode counts but no rule knows (a matmul)."""

    def __init__(self):
        super().__init__()
        self.a, self.b3, self.b5 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(8, 16, 5, padding=2)
        self.scale = nn.Parameter(torch.ones(1))
        self.fc = nn.Linear(16, 16)
        self.c = nn.Conv2d(16, 12, 3)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = self.a(x)
        branches = torch.stack([self.b3(x), self.b5(x)], dim=1)  # (N, 2, 16, H, W)
        weights = torch.softmax(branches.mean((3, 4), keepdim=True), dim=1)  # over the branches
        x = (branches * weights).sum(dim=1) * self.scale
        gate = torch.sigmoid(self.fc(x.mean((2, 3)))).view(x.shape[0], -1, 1, 1)
        x = torch.nn.functional.pad(x * gate.expand_as(x), (1, 1, 1, 1))
        x = self.c(x)
        mixed = torch.matmul(x.flatten(2), x.flatten(2).transpose(1, 2))  # (N, 12, 12): freezes c
        return self.head(mixed.mean(2))


def test_stack_scalars_padding_gates_and_unknown_ops_cost_exactly():
    from torch.utils.flop_counter import FlopCounterMode

    supernet = convert(_Gates(), input_size=8)
    units = {u.name: u.frozen for u in supernet.layer_units}
    assert units["a"] is None and units["b3"] is None  # b3, b5 and fc share the unit the stack ties
    assert {"b3", "b5", "fc"} <= set(supernet.unit("b3").producers)
    assert "unsupported operation matmul" in units["c"]
    for config in (supernet.largest_config(), supernet.smallest_config()):
        supernet.set_config(config)
        supernet.eval()
        static = materialize(supernet, config).eval()
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(static(x), supernet(x))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(torch.zeros(1, 3, 8, 8))
        assert supernet.cost(config).macs == counter.get_total_flops() // 2  # the matmul's MACs included


def test_untraceable_model_is_a_clear_error():
    class Net(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(ValueError, match="cannot trace"):
        trace_model(Net(), input_size=4)


def test_unit_names_are_stable_across_widths():
    small = trace_model(torchvision.models.mobilenet_v2(width_mult=0.5), input_size=64)
    large = trace_model(torchvision.models.mobilenet_v2(width_mult=1.5), input_size=64)
    assert [u.name for u in small.units] == [u.name for u in large.units]


def test_convert_leaves_the_input_model_alone():
    model = torchvision.models.resnet18()
    supernet = convert(model, input_size=64)
    assert type(model.conv1) is nn.Conv2d
    assert supernet.model.conv1.weight is not model.conv1.weight


# -- ECA: a conv along the channels ----------------------------------------------------------------------------

class _Eca(nn.Module):
    """A user's own ECA gate: the channel means moved into the length of a 1-D conv, ``(N, C) -> (N, 1, C)``, a conv
    along them, moved back and applied. ``style`` says how: timm's ``view`` (``"view"``), the ECA-Net paper's
    squeeze and transpose (``"transpose"``), a circular ``F.pad`` before an unpadded conv (``"circular"``); or a
    misuse of the moved dim, which must freeze: a conv of two output channels (``"two"``) or a linear layer across
    the moved channels (``"linear"``)."""

    def __init__(self, channels, style="view", k=3):
        super().__init__()
        self.style, self.pad = style, (k - 1) // 2
        self.conv = nn.Conv1d(1, 2 if style == "two" else 1, k, padding=0 if style == "circular" else self.pad,
                              bias=style == "circular")
        if style == "linear":
            self.conv = nn.Linear(channels, channels)

    def forward(self, x):
        n = x.shape[0]
        if self.style == "transpose":
            y = self.conv(x.mean((2, 3), keepdim=True).squeeze(-1).transpose(-1, -2))
            return x * torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1)).expand_as(x)
        y = x.mean((2, 3)).view(n, 1, -1)
        if self.style == "circular":
            y = torch.nn.functional.pad(y, (self.pad, self.pad), mode="circular")
        y = self.conv(y)
        if self.style == "two":
            y = y.mean(1, keepdim=True)
        return x * torch.sigmoid(y).view(n, -1, 1, 1).expand_as(x)


class _EcaNet(nn.Module):
    """ECA on a residual stream (the first gate, of ``style``) and on a block's hidden channels (timm's form)."""

    def __init__(self, style="view"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.eca = _Eca(16, style)
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                                  _Eca(24, k=5), nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.eca(self.stem(x))
        x = torch.relu(x + self.body(x))
        return self.fc(self.head(x).mean((2, 3)))


def _assert_exact(supernet, configs, sizes=(8,)):
    """Materialize parity, and the cost of each config equals FlopCounterMode / 2 of its static network."""
    from torch.utils.flop_counter import FlopCounterMode

    for config in configs:
        supernet.set_config(config)
        supernet.eval()
        static = materialize(supernet, config).eval()
        for size in sizes:
            x = torch.randn(2, 3, size, size)
            with torch.no_grad():
                torch.testing.assert_close(static(x), supernet(x))
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                static(torch.zeros(1, 3, size, size))
            assert supernet.cost(config, input_size=size).macs == counter.get_total_flops() // 2
        assert supernet.cost(config).params == sum(p.numel() for p in static.parameters())


@pytest.mark.parametrize("style", ["view", "transpose", "circular"])
def test_eca_gated_units_stay_slimmable_and_cost_exactly(style):
    import random

    supernet = convert(_EcaNet(style), input_size=8, divisor=4)
    units = {u.name: u for u in supernet.layer_units}
    assert units["stem.0"].frozen is None and units["body.0"].frozen is None
    assert "eca.conv" in units["stem.0"].carriers and "body.3.conv" in units["body.0"].carriers
    assert [c.module for c in supernet.trace.calls if c.kind == "chconv"] == ["eca.conv", "body.3.conv"]
    assert type(supernet.model.eca.conv) is nn.Conv1d and supernet.model.eca.conv.weight.shape[:2] == (1, 1)
    rng = random.Random(0)
    configs = [supernet.largest_config(), supernet.smallest_config()] + [supernet.sample_config(rng) for _ in range(4)]
    _assert_exact(supernet, configs, sizes=(8, 12))
    supernet.set_config(configs[-1])
    supernet.train()
    supernet(torch.randn(4, 3, 8, 8)).sum().backward()
    assert supernet.model.eca.conv.weight.grad is not None


@pytest.mark.parametrize("style", ["two", "linear"])
def test_other_uses_of_moved_channels_freeze_with_a_reason(style):
    supernet = convert(_EcaNet(style), input_size=8, divisor=4)
    units = {u.name: u for u in supernet.layer_units}
    assert "moved into another dim" in units["stem.0"].frozen and "eca" in units["stem.0"].frozen
    assert units["body.0"].frozen is None  # timm's form in the block: still slimmable
    _assert_exact(supernet, [supernet.largest_config(), supernet.smallest_config()])


def test_a_reshape_naming_the_channel_count_into_another_dim_freezes():
    class Named(_Eca):
        def forward(self, x):
            y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, 16))
            return x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1)

    net = _EcaNet()
    net.eca = Named(16)
    units = {u.name: u.frozen for u in convert(net, input_size=8).layer_units}
    assert "naming their count" in units["stem.0"] and units["body.0"] is None


def test_sort_channels_keeps_the_order_of_units_a_conv_along_the_channels_reads():
    from test_network_ordering import _randomize

    from autoslim.network.ordering import sort_channels

    supernet = convert(_EcaNet("circular"), input_size=8, divisor=4)
    _randomize(supernet)
    supernet.eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = supernet(x)
    perms = sort_channels(supernet)
    with torch.no_grad():
        after = supernet(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))
    assert set(perms) == {"head.0"}  # stem.0 and body.0 pass through an ECA conv: a permutation would mix others
    with pytest.raises(ValueError, match="conv along the channels"):
        sort_channels(supernet, importance={"stem.0": torch.arange(16.0)})
