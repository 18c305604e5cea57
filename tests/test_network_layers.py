"""Slim layers equal plain torch layers built from the sliced tensors."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from autoslim.network.layers import SlimBatchNorm2d, SlimConv2d, SlimLinear, to_slim


@pytest.mark.parametrize("groups,cin,cout,kin,kout", [(1, 16, 24, 8, 16), (4, 16, 32, 8, 12), (16, 16, 16, 8, 8)])
def test_slim_conv_equals_plain_conv(groups, cin, cout, kin, kout):
    conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, groups=groups, bias=True)
    slim = to_slim(conv)
    assert isinstance(slim, SlimConv2d) and slim.weight is conv.weight
    slim.set_active(kin, kout)
    depthwise = groups == cin == cout
    plain_groups = kout if depthwise else groups
    plain = nn.Conv2d(kin, kout, 3, stride=2, padding=1, groups=plain_groups, bias=True)
    with torch.no_grad():
        plain.weight.copy_(conv.weight[:kout, : kin // plain_groups])
        plain.bias.copy_(conv.bias[:kout])
    x = torch.randn(2, kin, 9, 9)
    assert_close(slim(x), plain(x))


def test_slim_conv_reflect_padding():
    conv = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", bias=False)
    slim = to_slim(conv)
    slim.set_active(4, 6)
    plain = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", bias=False)
    with torch.no_grad():
        plain.weight.copy_(conv.weight[:6, :4])
    x = torch.randn(1, 4, 7, 7)
    assert_close(slim(x), plain(x))


def test_slim_conv_rejects_bad_counts():
    slim = to_slim(nn.Conv2d(16, 32, 3, groups=4))
    with pytest.raises(ValueError, match="divisible by 4"):
        slim.set_active(6, 8)
    with pytest.raises(ValueError, match="outside"):
        slim.set_active(16, 40)
    depthwise = to_slim(nn.Conv2d(8, 8, 3, groups=8))
    with pytest.raises(ValueError, match="equal"):
        depthwise.set_active(4, 8)


def test_slim_linear_equals_plain_linear():
    linear = nn.Linear(32, 10)
    slim = to_slim(linear)
    slim.set_active(20, 7)
    plain = nn.Linear(20, 7)
    with torch.no_grad():
        plain.weight.copy_(linear.weight[:7, :20])
        plain.bias.copy_(linear.bias[:7])
    x = torch.randn(3, 20)
    assert_close(slim(x), plain(x))
    assert isinstance(slim, SlimLinear)


@pytest.mark.parametrize("training", [True, False])
def test_slim_batchnorm_equals_plain_batchnorm(training):
    bn = nn.BatchNorm2d(16)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    slim = to_slim(bn)
    assert isinstance(slim, SlimBatchNorm2d)
    slim.set_active(10)
    plain = nn.BatchNorm2d(10)
    plain.load_state_dict({k: (v[:10] if v.dim() else v.clone()) for k, v in bn.state_dict().items()})
    slim.train(training)
    plain.train(training)
    x = torch.randn(4, 10, 5, 5)
    assert_close(slim(x), plain(x))
    # the running statistics are updated in place on the active prefix only
    assert_close(bn.running_mean[:10], plain.running_mean)
    assert_close(bn.running_var[:10], plain.running_var)


def test_slim_batchnorm_cumulative_average():
    slim = to_slim(nn.BatchNorm2d(8, momentum=None))
    slim.reset_running_stats()
    slim.set_active(4)
    slim.train()
    xs = [torch.randn(16, 4, 3, 3) * (i + 1) for i in range(3)]
    for x in xs:
        slim(x)
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
    assert_close(slim.running_mean[:4], expected)
    assert torch.all(slim.running_mean[4:] == 0)


def test_grouped_conv_with_equal_counts_runs_whole_groups():
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=8, bias=False)  # ResNeXt-style: groups of 4 channels
    slim = to_slim(conv)
    slim.set_active(12, 12)  # the first 3 groups
    plain = nn.Conv2d(12, 12, 3, padding=1, groups=3, bias=False)
    with torch.no_grad():
        plain.weight.copy_(conv.weight[:12])
    x = torch.randn(2, 12, 5, 5)
    assert_close(slim(x), plain(x))
    full = torch.cat([x, torch.randn(2, 20, 5, 5)], 1)  # the first 3 groups of the full conv read only x
    assert_close(slim(x), conv(full)[:, :12])
    with pytest.raises(ValueError, match="multiple of 4"):
        slim.set_active(10, 10)


def test_layers_reading_a_concatenation_gather_the_parts():
    # input = cat(a: 8 of 16 channels, b: 4 of 8), a layer reads channels 0..7 and 16..19 of its full input
    ranges = ((0, 8), (16, 20))
    index = torch.tensor(list(range(0, 8)) + list(range(16, 20)))
    conv = nn.Conv2d(24, 6, 1)
    slim = to_slim(conv)
    slim.set_active(12, 6, ranges)
    x = torch.randn(2, 12, 3, 3)
    assert_close(slim(x), nn.functional.conv2d(x, conv.weight[:, index], conv.bias))
    linear = nn.Linear(24, 5)
    slim_linear = to_slim(linear)
    slim_linear.set_active(12, 5, ranges)
    v = torch.randn(3, 12)
    assert_close(slim_linear(v), nn.functional.linear(v, linear.weight[:, index], linear.bias))

    bn = nn.BatchNorm2d(24)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    slim_bn = to_slim(bn).train()
    slim_bn.set_active(12, ranges)
    y = torch.randn(4, 12, 3, 3) * 3 + 1
    out = slim_bn(y)
    expected = nn.functional.batch_norm(y, None, None, bn.weight[index], bn.bias[index], True)
    assert_close(out, expected)
    moved = bn.running_mean[index]
    assert torch.all(moved != 0)  # the statistics of the active channels were written back in place
    untouched = torch.ones(24, dtype=torch.bool)
    untouched[index] = False
    assert torch.all(bn.running_mean[untouched] == 0) and torch.all(bn.running_var[untouched] == 1)
    with pytest.raises(ValueError, match="hold 12 channels"):
        slim_bn.set_active(10, ranges)
