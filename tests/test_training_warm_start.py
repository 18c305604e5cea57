"""Starting from trained weights: ``train-supernet --init`` and ``retrain --init supernet`` (digits_tiny, 1-2 epochs).

The trained network is digits_tiny's family at 0.25x (4/8/16 channels inside the 0.5x space), so the supernet is
built narrower than the space's, at the widths its state dict shows.
"""

import copy
import json
import os
import shutil
import signal
from dataclasses import replace

import pytest
import torch
import yaml
from click.testing import CliRunner

from autoslim.channel_config import load_config
from autoslim.checkpoint import load_checkpoint, load_run
from autoslim.data.sources import load_dataset
from autoslim.seeds import derive_seed
from autoslim.spaces import build_model, load_space
from autoslim.training.calibrate import evaluate, recalibrate
from autoslim.training.retraining import resolve_retrain, retrain
from autoslim.training.settings import resolve_settings, save_settings
from autoslim.training.supernet_training import train_supernet
from autoslim.training.warm_start import sliced_network, supernet_from_weights
from autoslim.weights import file_sha256
from cli.main import cli

FAST = dict(batch_size=128, log_every=4, device="cpu")  # 10 steps per epoch
TINY = ["--batch-size", "128", "--device", "cpu"]
WIDTHS = {"stem.0": 4, "conv2.0": 8, "conv3.0": 16, "block.0.0": 16}  # digits_tiny's family at 0.25x


@pytest.fixture(scope="module")
def space():
    return load_space("digits_tiny")


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, space, data):
    """The 0.25x network trained for two epochs, its stem's BatchNorm statistics then moved off the training
    data's (so that recalibrating them would change the accuracy), and its state dict saved."""
    torch.manual_seed(0)
    network = build_model(space, width=0.25)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network.train()
    for epoch in range(2):
        for images, labels in data.batches("train", 64, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(images), labels).backward()
            optimizer.step()
    with torch.no_grad():
        network.stem[1].running_var.mul_(3.0)
        network.stem[1].running_mean.add_(0.3)
    network.eval()
    path = tmp_path_factory.mktemp("trained") / "net.pt"
    torch.save(network.state_dict(), path)
    return network, path


@pytest.fixture(scope="module")
def init_run(tmp_path_factory, trained):
    out = tmp_path_factory.mktemp("runs") / "init"
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_tiny", "--init", str(trained[1]),
                                      "--epochs", "1", "--num-subnets", "2", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def searched(tmp_path_factory, init_run):
    """A config searched from the supernet started from the trained network: its file and the search summary."""
    out = tmp_path_factory.mktemp("search")
    macs = json.loads((init_run[0] / "summary.json").read_text())["largest_macs"]
    result = CliRunner().invoke(cli, ["search", str(init_run[0]), "--flops", str(int(macs * 0.6)), "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (config,) = (out / "configs").glob("*.yaml")
    return config


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, searched):
    out = tmp_path_factory.mktemp("retrain") / "picked"
    result = CliRunner().invoke(cli, ["retrain", str(searched), "--baseline", "uniform", "--epochs", "1", *TINY,
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _interrupt_mid_second_epoch(network, report):
    """A retraining callback that stops it (SIGINT, as Ctrl-C) at step 13 of 20."""
    if report.kind == "step" and report.step == 13:
        os.kill(os.getpid(), signal.SIGINT)


def _test_accuracy(network, data):
    return evaluate(network, data.batches("test", 256))


# -- train-supernet --init ------------------------------------------------------------------------


def test_the_supernet_is_the_trained_network_with_its_channels_ordered(space, trained):
    network, path = trained
    supernet, widths, sha256 = supernet_from_weights(space, str(path), num_classes=10, input_size=8)
    assert widths == supernet.largest_config() == WIDTHS and sha256 == file_sha256(path)
    assert supernet.width_mult == 0.25 and supernet.uniform_config(0.25) == WIDTHS
    supernet.eval()
    images = torch.randn(16, 1, 8, 8)
    torch.testing.assert_close(supernet(images), network(images), rtol=1e-5, atol=1e-5)  # the same function
    # ... its channels reordered: the same filters, most important first
    stem, original = supernet.model.stem[0].weight.detach(), network.stem[0].weight.detach()
    assert not torch.equal(stem, original)
    assert sorted(map(tuple, stem.flatten(1).tolist())) == sorted(map(tuple, original.flatten(1).tolist()))


def test_init_accuracy_is_the_trained_networks_with_its_own_batchnorm(init_run, trained, data):
    out, output = init_run
    network, path = trained
    summary = json.loads((out / "summary.json").read_text())
    accuracy, loss = _test_accuracy(network, data)
    assert summary["init_accuracy"] == round(accuracy, 6)
    assert summary["init_loss"] == pytest.approx(loss, abs=2e-6)
    recalibrated = copy.deepcopy(network)  # the fixture moved the stem's statistics: recalibrating would show
    recalibrate(recalibrated, data.batches("train", 256, shuffle=True, generator=torch.Generator().manual_seed(0)), 8)
    assert _test_accuracy(recalibrated, data)[0] != accuracy
    assert summary["init"] == str(path.resolve()) and summary["init_sha256"] == file_sha256(path)
    assert f"started from {path.resolve()}: test accuracy {summary['init_accuracy']:.4f}" in " ".join(output.split())
    settings = yaml.safe_load((out / "run.yaml").read_text())
    assert settings["init"] == str(path.resolve())
    assert (settings["lr"], settings["warmup_epochs"]) == (0.02, 0.0)  # a tenth of 0.1 x 128/64, no warm-up
    run = load_run(out)  # reopened at the trained network's widths (search and export do this)
    assert run.supernet.largest_config() == WIDTHS and run.supernet.width_mult == 0.25
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["widths"] == WIDTHS and state["init"]["init_accuracy"] == summary["init_accuracy"]
    assert summary["largest_macs"] == run.supernet.cost().macs


def test_fine_tuning_defaults(space, trained):
    settings = resolve_settings(space, init=str(trained[1]))
    assert (settings.epochs, settings.lr, settings.warmup_epochs) == (2, 0.01, 0.0)  # 5% of 30 epochs, lr 0.1 / 10
    scratch = resolve_settings(space)
    assert (scratch.epochs, scratch.lr, scratch.warmup_epochs, scratch.init) == (6, 0.1, 1.0, None)
    assert resolve_settings(space, init=str(trained[1]), epochs=3, lr=0.05).epochs == 3


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, space, trained):
    path = tmp_path / "net.pt"
    shutil.copy(trained[1], path)
    settings = resolve_settings(space, init=str(path), epochs=2, num_subnets=2, **FAST)
    whole = train_supernet(settings, tmp_path / "whole")

    def interrupt(report):
        if report.kind == "step" and report.step == 13:  # mid second epoch
            os.kill(os.getpid(), signal.SIGINT)

    first = train_supernet(settings, tmp_path / "split", callback=interrupt)
    assert first.interrupted and first.summary["steps"] == 13
    path.unlink()  # a resumed run takes its weights and widths from its checkpoint, not from the --init file
    resumed = train_supernet(settings, tmp_path / "split")
    assert not resumed.interrupted and resumed.summary["steps"] == 20
    assert _states_equal(whole.supernet.state_dict(), resumed.supernet.state_dict())
    for key in ("init", "init_sha256", "init_accuracy", "largest_accuracy", "smallest_accuracy"):
        assert resumed.summary[key] == whole.summary[key], key


def test_another_init_in_the_run_is_refused(tmp_path, init_run, trained, space):
    out = tmp_path / "run"
    shutil.copytree(init_run[0], out)
    path = str(trained[1].resolve())
    other = tmp_path / "other.pt"
    torch.save(trained[0].state_dict(), other)
    args = ["train-supernet", "--space", "digits_tiny", "--epochs", "1", "--num-subnets", "2", *TINY, "--out", str(out)]
    for extra, given in ((["--init", str(other)], f"not started from the trained network {other}"),
                         ([], "not from scratch"), (["--resume"], "not from scratch")):
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 1, result.output
        line = " ".join(result.output.split())
        assert f"holds a run started from the trained network {path}, {given}: continue it with --init {path}" in line
        assert "--force" in line and "Traceback" not in result.output
    result = CliRunner().invoke(cli, [*args, "--init", str(trained[1])])
    assert result.exit_code == 0 and "already trained" in result.output
    scratch = tmp_path / "scratch"  # stopped before its first checkpoint: run.yaml only
    save_settings(scratch / "run.yaml", resolve_settings(space, epochs=1, num_subnets=2, **FAST))
    result = CliRunner().invoke(cli, [*args[:-1], str(scratch), "--init", str(trained[1])])
    assert result.exit_code == 1 and "holds a run from scratch, not started from the trained network" in result.output
    assert "continue it with no --init" in " ".join(result.output.split())


def test_a_run_moved_with_its_trained_network_continues_from_the_new_place(tmp_path, init_run, trained):
    moved = tmp_path / "elsewhere"
    shutil.copytree(init_run[0], moved / "run")
    weights = moved / "network.pt"
    shutil.copyfile(trained[1], weights)  # the same file, at another path
    args = ["train-supernet", "--space", "digits_tiny", "--epochs", "1", "--num-subnets", "2", *TINY,
            "--out", str(moved / "run"), "--init", str(weights)]
    result = CliRunner().invoke(cli, args)  # the same start, but its path is a setting: --resume says so
    assert result.exit_code == 1 and "other settings: init" in result.output and "--resume" in result.output
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0 and "already trained" in result.output, result.output
    state = torch.load(trained[1], weights_only=True)
    state[next(iter(state))] += 1  # other weights at the new path: another start
    torch.save(state, weights)
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 1 and f"not started from the trained network {weights}" in " ".join(result.output.split())


@pytest.mark.parametrize("weights, message", [
    (lambda net: {f"features.{k}": v for k, v in net.state_dict().items()},
     "missing key 'stem.0.weight' (and 26 more) of the network of space digits_tiny (10 classes), unexpected key "
     "'features.stem.0.weight' (and 31 more): the weights of another architecture?"),
    (lambda net: {k: v for k, v in net.state_dict().items() if k != "block.2.bias"}, "missing key 'block.2.bias'"),
    (lambda net: {**net.state_dict(), "head.weight": torch.zeros(2)}, "unexpected key 'head.weight'"),
    (lambda net: {**net.state_dict(), "fc.weight": torch.zeros(7, 16), "fc.bias": torch.zeros(7)},
     "'fc.weight' has shape [7, 16], but the network of space digits_tiny (10 classes) needs [10, 16]"),
    (lambda net: build_model(load_space("digits_tiny"), width=1.0).state_dict(),
     "'stem.0.weight' has 16 output channels, more than the 8 of unit 'stem.0' in the network of space digits_tiny "
     "(10 classes) at width 0.5; start from a wider supernet with --width-mult (now 0.5)"),
])
def test_weights_that_do_not_fit_are_one_line_naming_the_key(tmp_path, trained, weights, message):
    path = tmp_path / "bad.pt"
    torch.save(weights(trained[0]), path)
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_tiny", "--init", str(path), *TINY,
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())  # one line, wrapped by the console
    assert line.startswith(f"error: {path}: {message}") and line.count("error:") == 1 and "Traceback" not in line
    assert not (tmp_path / "run").exists()


# -- retrain --init supernet ----------------------------------------------------------------------


def test_picks_of_a_supernet_from_a_trained_network_are_fine_tuned_from_it(fine_tuned, searched, init_run, data):
    out, output = fine_tuned
    run_dir = str(init_run[0].resolve())
    summary = json.loads((out / "summary.json").read_text())
    config = load_config(searched)
    assert summary["init"] == run_dir and summary["channels"] == config.channels  # the default for such a config
    # it started from the supernet's weights, BatchNorm recalibrated as the retraining does it
    run = load_run(init_run[0])
    generator = torch.Generator().manual_seed(derive_seed("calibration", 0))
    batches = data.batches("train", 256, shuffle=True, augment=True, generator=generator)
    start = sliced_network(run.supernet, config.channels, batches, 8)
    assert summary["init_accuracy"] == round(_test_accuracy(start, data)[0], 6)
    assert f"sliced from {run_dir}: test accuracy {summary['init_accuracy']:.4f}" in " ".join(output.split())
    # the uniform baseline of at most its MACs, sliced from the same supernet (never wider than it)
    baseline = summary["baseline"]
    assert baseline["init"] == run_dir and baseline["init_accuracy"] is not None
    assert baseline["channels"] == run.supernet.uniform_config(baseline["width"])
    assert baseline["width"] <= run.supernet.width_mult and baseline["macs"] <= summary["macs"]
    for folder in (out, out / "uniform"):
        settings = yaml.safe_load((folder / "run.yaml").read_text())["settings"]
        assert (settings["init"], settings["lr"], settings["warmup_epochs"]) == (run_dir, 0.02, 0.0)
    assert "fine-tuned from the supernet" in output


def test_retrain_init_choices_and_defaults(searched, init_run, tmp_path):
    run_dir = str(init_run[0].resolve())
    fine = resolve_retrain(searched).train  # a config of a supernet started from a trained network: fine-tune
    assert (fine.init, fine.epochs, fine.lr, fine.warmup_epochs) == (run_dir, 2, 0.01, 0.0)
    assert resolve_retrain(searched, init="supernet").train.init == run_dir
    assert resolve_retrain(searched, init=str(init_run[0])).train.init == run_dir
    scratch = resolve_retrain(searched, init="scratch").train
    assert (scratch.init, scratch.epochs, scratch.lr, scratch.warmup_epochs) == (None, 30, 0.1, 1.0)
    # a config of a supernet trained from scratch trains from scratch unless told otherwise
    config = load_config(searched)
    from_scratch = tmp_path / "scratch_run"
    save_settings(from_scratch / "run.yaml", resolve_settings(load_space("digits_tiny")))
    config.source = {"run": str(from_scratch)}
    other = tmp_path / "c.yaml"
    other.write_text(yaml.safe_dump(config.to_dict()))
    assert resolve_retrain(other).train.init is None
    with pytest.raises(FileNotFoundError, match="holds no supernet run"):
        resolve_retrain(other, init="supernet")
    config.source = {}
    other.write_text(yaml.safe_dump(config.to_dict()))
    with pytest.raises(ValueError, match="names no supernet run"):
        resolve_retrain(other, init="supernet")
    with pytest.raises(ValueError, match="--joint configs with --init scratch"):
        resolve_retrain(searched, joint=[searched], init="supernet")


def test_a_retraining_is_continued_only_with_its_own_init(fine_tuned, searched, init_run, tmp_path):
    out = tmp_path / "picked"
    shutil.copytree(fine_tuned[0], out)
    run_dir = str(init_run[0].resolve())
    args = ["retrain", str(searched), "--epochs", "1", *TINY, "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--init", "scratch"])
    assert result.exit_code == 1, result.output
    assert (f"holds a retraining fine-tuned from the supernet {run_dir}, not from scratch: continue it with --init "
            f"{run_dir}") in " ".join(result.output.split())
    result = CliRunner().invoke(cli, [*args, "--baseline", "uniform", "--init", "supernet"])
    assert result.exit_code == 0 and "already trained" in result.output


def test_a_fine_tune_moved_with_its_supernet_continues_from_the_new_place(searched, init_run, tmp_path):
    shutil.copytree(init_run[0], tmp_path / "supernet")
    settings = resolve_retrain(searched, init=str(tmp_path / "supernet"), epochs=2, **FAST)

    first = retrain(settings, tmp_path / "picked", callback=_interrupt_mid_second_epoch)
    assert first.interrupted and first.summary["init_sha256"] == file_sha256(init_run[0] / "checkpoint.pt")
    moved = tmp_path / "elsewhere"  # the fine-tune and its supernet run, moved to another machine's paths
    moved.mkdir()
    (tmp_path / "supernet").rename(moved / "supernet")
    shutil.copytree(tmp_path / "picked", moved / "picked")
    given = replace(settings, train=replace(settings.train, init=str(moved / "supernet")))
    with pytest.raises(ValueError, match="other settings: init"):  # the path is a setting: --resume says so
        retrain(given, moved / "picked")
    resumed = retrain(given, moved / "picked", resume=True)
    assert not resumed.interrupted and resumed.summary["steps"] == 20
    assert resumed.summary["init"] == settings.train.init  # the run keeps its own settings
    whole = retrain(given, tmp_path / "whole")
    assert _states_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert resumed.summary["init_accuracy"] == whole.summary["init_accuracy"]
    shutil.copytree(tmp_path / "picked", moved / "again")  # another supernet file at the new path: another start
    with open(moved / "supernet" / "checkpoint.pt", "ab") as file:
        file.write(b"\0")
    with pytest.raises(ValueError, match=f"not fine-tuned from the supernet {moved / 'supernet'}"):
        retrain(given, moved / "again", resume=True)


def test_an_interrupted_fine_tune_resumes_to_the_same_weights(searched, tmp_path):
    settings = resolve_retrain(searched, epochs=2, **FAST)
    whole = retrain(settings, tmp_path / "whole")

    first = retrain(settings, tmp_path / "split", callback=_interrupt_mid_second_epoch)
    assert first.interrupted and first.summary["steps"] == 13
    resumed = retrain(settings, tmp_path / "split")
    assert not resumed.interrupted and resumed.summary["steps"] == 20
    assert _states_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert resumed.summary["init_accuracy"] == whole.summary["init_accuracy"] is not None
