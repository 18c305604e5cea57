"""sort_channels: one permutation per unit, everywhere the unit appears, keeps the function (issue 21, part 1).

Every bundled space and every torchvision family of the coverage table computes the same outputs in eval mode
after its channels are sorted, with BatchNorm statistics, norm scales and layer scales randomised first so
that every tensor the permutation must move makes a difference. A small trained network shows that the
sorted prefixes are the better ones.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from autoslim.data.sources import load_dataset
from autoslim.network.ordering import channel_importance, sort_channels
from autoslim.training.calibrate import evaluate, recalibrate
from torchvision_families import AUX as _AUX, FAMILIES  # the coverage table's families, one list for both tests
from autoslim.network.supernet import convert
from autoslim.spaces import build_supernet, configure_space, list_spaces, load_space


@torch.no_grad()
def _randomize(supernet):
    """Random BatchNorm statistics and affine parameters, LayerNorm and layer-scale values (all positive scales)."""
    g = torch.Generator().manual_seed(1)
    for module in supernet.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.2)
    for use in supernet.trace.parameters:
        value = supernet.model.get_submodule(use.owner)._parameters[use.name]
        value.copy_(torch.rand(value.shape, generator=g) + 0.5)


def _assert_same_function(supernet, size, in_channels=3):
    _randomize(supernet)
    supernet.eval()
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = supernet(x)
    perms = sort_channels(supernet)
    with torch.no_grad():
        after = supernet(x)
    assert before.std() > 0
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))
    moved = [unit for unit in supernet.slimmable_units if unit.name in perms]
    assert len(moved) >= 0.9 * len(supernet.slimmable_units)  # random weights: almost every unit is reordered
    assert all(supernet.unit(name).frozen is None for name in perms)
    return perms


# -- every pattern in one small model ----------------------------------------------------------------------------


class _Patterns(nn.Module):
    """A residual block with a grouped conv, a concatenation read at offsets, a squeeze-and-excitation gate, a
    layer scale and a flatten of 2x2 positions per channel read by a linear layer, all at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(16), nn.ReLU(),  # groups of 2
            nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.left = nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 4, 1, stride=2), nn.ReLU())
        self.merge = nn.Conv2d(10, 12, 1)
        self.layer_scale = nn.Parameter(torch.rand(1, 12, 1, 1) + 0.5)
        self.reduce = nn.Conv2d(12, 4, 1)
        self.expand = nn.Conv2d(4, 12, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear((12 + 6) * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        left = self.left(x)
        x = self.layer_scale * self.merge(torch.cat([left, self.right(x)], 1))
        x = x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = torch.flatten(self.pool(torch.cat([x, left], 1)), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def test_every_pattern_keeps_the_function_and_moves_groups_whole():
    supernet = convert(_Patterns(), input_size=8, divisor=2)
    stem_inputs = supernet.model.stem[0].weight.detach().sum(0).clone()  # invariant to moving output channels
    fc2_bias = supernet.model.fc2.bias.detach().clone()
    perms = _assert_same_function(supernet, 8)
    units = {unit.name: unit for unit in supernet.units}
    assert set(units["stem.0"].producers) == {"stem.0", "body.6"}
    assert set(units["merge"].producers) == {"merge", "expand"} and units["merge"].carriers == ["layer_scale"]
    assert set(perms) == {u.name for u in supernet.slimmable_units}
    hidden = perms["body.0"]  # carried by the grouped conv: moves in whole groups of 2, each in its own order
    assert units["body.0"].multiple == 2
    assert torch.equal(hidden[1::2], hidden[0::2] + 1) and (hidden[0::2] % 2 == 0).all()
    torch.testing.assert_close(supernet.model.stem[0].weight.sum(0), stem_inputs)  # image channels: never moved
    assert torch.equal(supernet.model.fc2.bias, fc2_bias)  # network outputs: never moved
    assert sort_channels(supernet) == {}  # sorted already: the importance moves with its channels


def test_given_scores_set_the_order_everywhere():
    supernet = convert(_Patterns(), input_size=8, divisor=2)
    model = supernet.model
    merge, expand, scale = (t.detach().clone() for t in (model.merge.weight, model.expand.bias, model.layer_scale))
    fc1 = model.fc1.weight.detach().clone()
    perms = sort_channels(supernet, importance={"merge": torch.arange(12.0)})  # ascending scores: reversed order
    assert list(perms) == ["merge"] and torch.equal(perms["merge"], torch.arange(11, -1, -1))
    assert torch.equal(model.merge.weight, merge.flip(0))
    assert torch.equal(model.expand.bias, expand.flip(0))
    assert torch.equal(model.layer_scale, scale.flip(1))
    # fc1 reads 12 merge channels then 6 left channels, 4 columns (2x2 positions) per channel
    expected = torch.cat([fc1[:, :48].reshape(16, 12, 4).flip(1).reshape(16, 48), fc1[:, 48:]], 1)
    assert torch.equal(model.fc1.weight, expected)


class _GroupNormed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.norm = nn.GroupNorm(4, 32)  # groups of 8 channels; counts in multiples of 4
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_group_norm_groups_move_whole():
    supernet = convert(_GroupNormed(), input_size=8, divisor=4)
    _randomize(supernet)
    with torch.no_grad():
        supernet.model.norm.weight.copy_(torch.rand(32) + 0.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = supernet.eval()(x)
    perm = sort_channels(supernet, importance={"conv": torch.arange(32.0)})["conv"]
    assert torch.equal(perm, torch.arange(32).reshape(4, 8).flip(0).reshape(32))  # the groups reversed, each in order
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("importance,match", [
    ("l2", "unknown importance"),
    ({"stem.0": torch.ones(3)}, "has 8 channels"),
    ({"fc2": torch.ones(10)}, "frozen"),
    ({"nope": torch.ones(3)}, "unknown unit"),
    ("taylor", "needs batches"),
])
def test_bad_importance_is_a_clear_error(importance, match):
    supernet = convert(_Patterns(), input_size=8, divisor=2)
    with pytest.raises(ValueError, match=match):
        sort_channels(supernet, importance=importance)


def test_taylor_importance_keeps_the_function():
    supernet = convert(_Patterns(), input_size=8, divisor=2)
    _randomize(supernet)
    supernet.eval()
    x, labels = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    with torch.no_grad():
        before = supernet(x)
    scores = channel_importance(supernet, "taylor", batches=[(x, labels)] * 2)
    assert set(scores) == {u.name for u in supernet.units if u.frozen is None}
    perms = sort_channels(supernet, importance="taylor", batches=[(x, labels)] * 2)
    assert perms and all(p.grad is None for p in supernet.parameters())  # gradients are taken, not stored
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), before, rtol=1e-5, atol=1e-6)


# -- every bundled space and torchvision family ------------------------------------------------------------------


@pytest.mark.parametrize("name", list_spaces())
def test_bundled_space_keeps_its_function(name):
    space = load_space(name)
    size = min(space.input_size, 64)
    supernet = build_supernet(configure_space(space, num_classes=10, input_size=size))
    _assert_same_function(supernet, size, space.in_channels)


_SLOW = {"wide_resnet50_2", "efficientnet_v2_s", "densenet121", "vgg11_bn", "inception_v3"}


@pytest.mark.parametrize("name", [pytest.param(f[1], marks=pytest.mark.slow) if f[1] in _SLOW else f[1]
                                  for f in FAMILIES], ids=[f[0] for f in FAMILIES])
def test_torchvision_family_keeps_its_function(name):
    size = 96 if name == "inception_v3" else 64
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **_AUX.get(name, {}))
    _assert_same_function(convert(model, input_size=size), size)


# -- sorted prefixes are the better ones -----------------------------------------------------------------------


def test_sorted_prefixes_of_a_trained_network_are_more_accurate():
    data = load_dataset("digits", search_size=0)
    supernet = build_supernet(load_space("digits_cnn"))
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    supernet.train()
    for _ in range(9):  # 9 epochs of 22 batches: about 200 steps
        for images, labels in data.batches("train", 64, shuffle=True, generator=generator, drop_last=True):
            loss = F.cross_entropy(supernet(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    unsorted = copy.deepcopy(supernet)
    sort_channels(supernet)
    half = {unit.name: unit.maximum // 2 for unit in supernet.slimmable_units}
    accuracy = {}
    for name, net in (("unsorted", unsorted), ("sorted", supernet)):
        full, _ = evaluate(net, data.batches("test", 359))
        net.set_config(half)
        recalibrate(net, data.batches("train", 128, shuffle=True, generator=torch.Generator().manual_seed(1)), 8)
        accuracy[name] = full, evaluate(net, data.batches("test", 359))[0]
    assert accuracy["sorted"][0] == accuracy["unsorted"][0] > 0.9  # the same network at full width
    assert accuracy["sorted"][1] > accuracy["unsorted"][1] + 0.05, accuracy
