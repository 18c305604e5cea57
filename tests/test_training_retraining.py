"""``autoslim retrain``: fresh static networks, the uniform baseline, resume, NaN, bad configs (digits, 1-2 epochs)."""

import json
import os
import signal

import pytest
import torch
import yaml
from click.testing import CliRunner

import autoslim.training.retraining
from autoslim.channel_config import ChannelConfig, load_config, save_config
from autoslim.data.sources import load_dataset
from autoslim.network.layers import SlimBatchNorm2d, SlimConv2d, SlimLinear
from autoslim.spaces import build_supernet, load_space
from autoslim.training.calibrate import evaluate
from autoslim.training.retraining import load_retrained, resolve_retrain, retrain
from autoslim.training.settings import resolve_settings, save_settings
from autoslim.training.supernet_training import DivergedError
from cli.main import cli

CHANNELS = {"stem.0": 8, "conv2.0": 20, "conv3.0": 40, "block.0.0": 68}
FAST = dict(batch_size=128, log_every=4, device="cpu")  # 10 steps per epoch


@pytest.fixture(scope="module")
def supernet():
    return build_supernet(load_space("digits_cnn"))


def _write_config(path, supernet, channels=CHANNELS, space="digits_cnn", **options):
    save_config(path, ChannelConfig(space=space, channels=dict(channels),
                                    space_options={"num_classes": 10, "input_size": 8, "in_channels": 1,
                                                   "width_mult": 1.5, **options}))
    return path


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_retrain_with_uniform_baseline(supernet, tmp_path):
    config = _write_config(tmp_path / "c.yaml", supernet)
    out = tmp_path / "retrain"
    result = CliRunner().invoke(cli, ["retrain", str(config), "--epochs", "1", "--batch-size", "128", "--device", "cpu",
                                      "--baseline", "uniform", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for folder in (out, out / "uniform"):
        for name in ("checkpoint.pt", "metrics.csv", "run.yaml", "summary.json"):
            assert (folder / name).is_file(), folder / name
    summary = json.loads((out / "summary.json").read_text())
    macs = supernet.cost(CHANNELS).macs
    assert summary["macs"] == macs and summary["params"] == supernet.cost(CHANNELS).params
    assert summary["epochs"] == 1 and summary["finished"]
    assert summary["config"] == str(config.resolve()) and summary["seconds"] > 0
    baseline = summary["baseline"]
    width = baseline["width"]
    assert baseline["channels"] == supernet.uniform_config(width) == load_config(out / "uniform" / "config.yaml").channels
    assert baseline["macs"] == supernet.cost(supernet.uniform_config(width)).macs <= macs
    assert supernet.cost(supernet.uniform_config(width + 0.01)).macs > macs  # the widest uniform net within the MACs
    assert json.loads((out / "uniform" / "summary.json").read_text())["accuracy"] == baseline["accuracy"]
    assert f"uniform {width:g}x" in result.output and "searched" in result.output
    # trained from fresh weights as a plain network, with the same recipe and seed as the baseline
    model = load_retrained(out)
    assert not any(isinstance(m, (SlimConv2d, SlimLinear, SlimBatchNorm2d)) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == summary["params"]
    accuracy, _ = evaluate(model, load_dataset("digits").batches("test", 256))
    assert accuracy == pytest.approx(summary["accuracy"], abs=1e-6)  # the test split, with the saved weights
    main_settings, base_settings = (yaml.safe_load((d / "run.yaml").read_text())["settings"] for d in (out, out / "uniform"))
    assert main_settings == base_settings and main_settings["epochs"] == 1 and main_settings["nesterov"]
    # re-running trains nothing
    before = (out / "checkpoint.pt").read_bytes()
    result = CliRunner().invoke(cli, ["retrain", str(config), "--epochs", "1", "--batch-size", "128", "--device", "cpu",
                                      "--baseline", "uniform", "--out", str(out)])
    assert result.exit_code == 0 and "already trained" in result.output
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_uniform_config_records_its_width(supernet, tmp_path):
    config = tmp_path / "uniform.yaml"
    result = CliRunner().invoke(cli, ["cost", "digits_cnn", "--width", "0.5", "--save-config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "retrain"
    result = CliRunner().invoke(cli, ["retrain", str(config), "--epochs", "1", "--batch-size", "128", "--device", "cpu",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"] == "uniform" and "uniform 0.5x" in result.output and "searched" not in result.output
    assert summary["width"] == 0.5 and summary["channels"] == supernet.uniform_config(0.5)
    assert summary["macs"] == supernet.cost(supernet.uniform_config(0.5)).macs


def test_settings_are_the_full_recipe_on_the_source_runs_data(supernet, tmp_path):
    settings = resolve_retrain(_write_config(tmp_path / "c.yaml", supernet))
    assert settings.train.epochs == load_space("digits_cnn").recipe.epochs and settings.baseline is None
    # a config searched from a run trains on that run's data and split unless told otherwise
    space = load_space("digits_cnn")
    save_settings(tmp_path / "run" / "run.yaml", resolve_settings(space, seed=3, search_size=200))
    config = load_config(tmp_path / "c.yaml")
    config.source = {"run": str(tmp_path / "run"), "step": 4}
    save_config(tmp_path / "c.yaml", config)
    settings = resolve_retrain(tmp_path / "c.yaml", seed=5).train
    assert (settings.seed, settings.search_size, settings.epochs) == (5, 200, space.recipe.epochs)
    assert resolve_retrain(tmp_path / "c.yaml").train.seed == 3


def test_interrupted_and_resumed_equals_uninterrupted(supernet, tmp_path):
    settings = resolve_retrain(_write_config(tmp_path / "c.yaml", supernet), epochs=2, **FAST)
    whole = retrain(settings, tmp_path / "whole")

    def interrupt(network, report):
        if report.kind == "step" and report.step == 13:  # mid second epoch, between log rows
            os.kill(os.getpid(), signal.SIGINT)

    first = retrain(settings, tmp_path / "split", callback=interrupt)
    assert first.interrupted and first.summary["steps"] == 13 and first.summary["epochs"] == 1
    resumed = retrain(settings, tmp_path / "split")
    assert not resumed.interrupted and resumed.summary["steps"] == 20
    assert _states_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert resumed.summary["accuracy"] == whole.summary["accuracy"]
    assert _states_equal(load_retrained(tmp_path / "split").state_dict(), whole.model.state_dict())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(supernet, tmp_path, monkeypatch):
    settings = resolve_retrain(_write_config(tmp_path / "c.yaml", supernet), epochs=2, **FAST)
    built = []
    real_build = autoslim.training.retraining.build_network

    def remember(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def poison(network, report):
        if report.kind == "step" and report.step == 14:
            with torch.no_grad():
                next(p for p in built[0][0].parameters() if p.ndim > 1).fill_(float("nan"))

    monkeypatch.setattr(autoslim.training.retraining, "build_network", remember)
    with pytest.raises(DivergedError, match=r"diverged: loss nan at step 16 .*last good checkpoint \(epoch 1\) is kept"):
        retrain(settings, tmp_path / "nan", callback=poison)
    state = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_another_retraining_in_out_needs_force(supernet, tmp_path):
    out = tmp_path / "r"
    args = ["--epochs", "1", "--batch-size", "128", "--device", "cpu", "--out", str(out)]
    assert CliRunner().invoke(cli, ["retrain", str(_write_config(tmp_path / "a.yaml", supernet)), *args]).exit_code == 0
    other = _write_config(tmp_path / "b.yaml", supernet, dict(CHANNELS, **{"stem.0": 12}))
    result = CliRunner().invoke(cli, ["retrain", str(other), *args])
    assert result.exit_code == 1 and "other channels" in result.output and "--force" in result.output
    assert CliRunner().invoke(cli, ["retrain", str(other), *args, "--force"]).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["channels"]["stem.0"] == 12


@pytest.mark.parametrize("change,message", [
    (lambda s, p: _write_config(p, s, dict(CHANNELS, nope=8)), "unknown unit 'nope'"),
    (lambda s, p: _write_config(p, s, dict(CHANNELS, **{"conv2.0": 64})), "'conv2.0': 64 channels is outside the allowed range 1..48"),
    (lambda s, p: _write_config(p, s, {k: v for k, v in CHANNELS.items() if k != "stem.0"}), "missing unit(s) 'stem.0'"),
    (lambda s, p: _write_config(p, s, width_mult=1.0), "outside the allowed range"),  # channels of a 1.5x supernet
    (lambda s, p: _write_config(p, s, space="resnet20_cifar"), "in_channels is 1 but space resnet20_cifar has 3"),
    (lambda s, p: p.write_text("format: autoslim-config/1\nspace: [digits_cnn\n"), "malformed YAML"),
])
def test_bad_configs_are_one_line(supernet, tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    change(supernet, path)
    result = CliRunner().invoke(cli, ["retrain", str(path), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert message in result.output and str(path) in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_joint_configs_of_another_space_are_refused(supernet, tmp_path):
    good = _write_config(tmp_path / "a.yaml", supernet)
    other = build_supernet(load_space("resnet20_cifar"))
    config = other.smallest_config()
    save_config(tmp_path / "b.yaml", ChannelConfig(space="resnet20_cifar", channels=config,
                                                   space_options={"num_classes": 10, "input_size": 32}))
    result = CliRunner().invoke(cli, ["retrain", str(good), "--joint", str(tmp_path / "b.yaml"), "--out",
                                      str(tmp_path / "r")])
    assert result.exit_code == 1 and "does not match space 'digits_cnn'" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["retrain", str(good), "--joint", str(good), "--baseline", "uniform"])
    assert result.exit_code == 2
