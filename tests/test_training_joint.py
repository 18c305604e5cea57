"""Switchable BatchNorm: several configs as one network, one set of BatchNorm statistics per config."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch.testing import assert_close

from autoslim.channel_config import ChannelConfig, save_config
from autoslim.spaces import build_supernet, load_space
from autoslim.training.joint import JointNetwork, SwitchableBatchNorm2d
from autoslim.training.retraining import load_retrained
from cli.main import cli

LARGE = {"stem.0": 20, "conv2.0": 40, "conv3.0": 76, "block.0.0": 68}
SMALL = {"stem.0": 8, "conv2.0": 16, "conv3.0": 28, "block.0.0": 20}


@pytest.fixture
def joint():
    return JointNetwork(build_supernet(load_space("digits_cnn")), [LARGE, SMALL])


def _stats(network, index):
    return [(s.bns[index].running_mean.clone(), s.bns[index].running_var.clone()) for s in network.switches]


def test_each_config_has_its_own_batchnorm_sized_for_it(joint):
    assert len(joint.switches) == 5
    for switch, count in zip(joint.switches[:2], (("stem.0", "stem.0"), ("conv2.0", "conv2.0"))):
        assert [bn.num_features for bn in switch.bns] == [LARGE[count[0]], SMALL[count[1]]]
    for index in (0, 1):
        others = _stats(joint, 1 - index)
        joint.select(index)
        joint.train()
        with torch.no_grad():
            joint(torch.randn(16, 1, 8, 8))
        # running config ``index`` moved only its own statistics
        assert all(not torch.equal(m, torch.zeros_like(m)) for m, _ in _stats(joint, index))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(others, _stats(joint, 1 - index)))


def test_materialize_equals_the_joint_network(joint):
    joint.train()
    with torch.no_grad():
        for index in (0, 1):
            joint.select(index)
            joint(torch.randn(16, 1, 8, 8) * (index + 1))
    joint.eval()
    x = torch.randn(4, 1, 8, 8)
    for index in (1, 0):
        static = joint.materialize(index).eval()
        assert not any(isinstance(m, SwitchableBatchNorm2d) for m in static.modules())
        joint.select(index)
        with torch.no_grad():
            assert_close(static(x), joint(x))
    assert joint.index == 0


def test_joint_retraining_keeps_statistics_per_config(tmp_path):
    supernet = build_supernet(load_space("digits_cnn"))
    paths = []
    for name, channels in (("large", LARGE), ("small", SMALL)):
        paths.append(tmp_path / f"{name}.yaml")
        save_config(paths[-1], ChannelConfig(space="digits_cnn", channels=channels,
                                             space_options={"num_classes": 10, "input_size": 8}))
    out = tmp_path / "joint"
    result = CliRunner().invoke(cli, ["retrain", str(paths[0]), "--joint", str(paths[1]), "--epochs", "1",
                                      "--batch-size", "128", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["network"] for entry in summary["joint"]] == ["large", "small"]
    assert [entry["macs"] for entry in summary["joint"]] == [supernet.cost(LARGE).macs, supernet.cost(SMALL).macs]
    assert all(0 < entry["accuracy"] <= 1 for entry in summary["joint"])
    network = load_retrained(out)
    steps = summary["steps"]
    for switch in network.switches:
        large, small = switch.bns
        assert large.num_batches_tracked == small.num_batches_tracked == steps  # each config ran every step
        assert large.num_features > small.num_features
    # past the stem a channel's statistics depend on how many channels feed it: they differ per config
    for switch in network.switches[1:]:
        large, small = switch.bns
        assert not torch.allclose(large.running_mean[: small.num_features], small.running_mean)
    # each config is tested with its own statistics: its static network reproduces the reported accuracy
    from autoslim.data.sources import load_dataset
    from autoslim.training.calibrate import evaluate

    data = load_dataset("digits")
    for index, entry in enumerate(summary["joint"]):
        accuracy, _ = evaluate(network.materialize(index).eval(), data.batches("test", 256))
        assert accuracy == pytest.approx(entry["accuracy"], abs=1e-6)
