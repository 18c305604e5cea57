"""Tests of supernet training: the sandwich rule, settings, the run directory, resume, NaN, DDP and the CLI."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from autoslim.checkpoint import TRAINING_KEYS, load_checkpoint, load_run, save_weights_only
from autoslim.spaces import build_supernet, load_space
from autoslim.training.optim import WarmupCosine, build_optimizer
from autoslim.training.sandwich import distillation_loss, sandwich_configs, sandwich_step, subnet_rng
from autoslim.training.settings import load_settings, resolve_settings
from autoslim.training.supernet_training import DivergedError, train_supernet
from cli.main import cli

# Small and fast: digits at batch 128 is 10 steps per epoch.
FAST = dict(batch_size=128, log_every=4, device="cpu")


@pytest.fixture(scope="module")
def space():
    return load_space("digits_cnn")


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return build_supernet(space)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch digits run made through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_cnn", "--epochs", "1", "--batch-size", "128",
                                      "--num-subnets", "3", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- sampling and the sandwich step ---------------------------------------------------------------


def test_sandwich_always_holds_largest_and_smallest(supernet):
    for step in range(5):
        configs = sandwich_configs(supernet, 4, subnet_rng(0, 0, step))
        assert len(configs) == 4
        assert configs[0] == supernet.largest_config() and configs[1] == supernet.smallest_config()
        for config in configs[2:]:
            assert supernet.validate_config(config) == config
            assert all(count in supernet.unit(name).choices for name, count in config.items())
    with pytest.raises(ValueError, match="at least 2"):
        sandwich_configs(supernet, 1, random.Random(0))


def test_random_configs_reproducible_per_seed_and_different_across_ranks(supernet):
    def draws(seed, rank):
        return [sandwich_configs(supernet, 6, subnet_rng(seed, rank, step))[2:] for step in range(4)]

    assert draws(0, 0) == draws(0, 0)
    assert draws(0, 0) != draws(0, 1)
    assert draws(0, 0) != draws(1, 0)
    assert draws(0, 1) == draws(1, 0)  # rank r draws as seed + r
    step0 = sandwich_configs(supernet, 6, subnet_rng(0, 0, 0))[2:]
    assert len({tuple(c.values()) for c in step0}) > 1  # independent draws within a step


def test_distillation_targets_carry_no_gradient(supernet):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    configs = sandwich_configs(supernet, 3, subnet_rng(0, 0, 0))
    supernet.train()

    def grads(detach: bool) -> list[torch.Tensor]:
        supernet.zero_grad(set_to_none=True)
        targets = None
        for config in configs:
            supernet.set_config(config)
            logits = supernet(x)
            if targets is None:
                loss = F.cross_entropy(logits, y, label_smoothing=0.1)
                targets = logits.softmax(1)
                targets = targets.detach() if detach else targets
                loss.backward(retain_graph=not detach)
            else:
                (-(targets * logits.log_softmax(1)).sum(1).mean()).backward(retain_graph=not detach)
        return [p.grad.clone() for p in supernet.parameters()]

    supernet.zero_grad(set_to_none=True)
    losses = sandwich_step(supernet, supernet, configs, x, y, label_smoothing=0.1)
    got = [p.grad.clone() for p in supernet.parameters()]
    assert losses.shape == (2,) and not losses.requires_grad
    for g, expected in zip(got, grads(detach=True)):
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6)
    leaking = grads(detach=False)  # the test can tell: a gradient through the teacher changes the weights' grads
    assert any(not torch.allclose(g, e, rtol=1e-4, atol=1e-6) for g, e in zip(got, leaking))
    teacher = torch.randn(4, 10, requires_grad=True)
    distillation_loss(torch.randn(4, 10, requires_grad=True), teacher.softmax(1)).backward()
    assert teacher.grad is None


def test_gradients_are_synchronised_only_in_the_last_pass(supernet):
    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.entered, self.synced = inner, 0, []

        @contextlib.contextmanager
        def no_sync(self):
            self.entered += 1
            self.inside = True
            yield
            self.inside = False

        def forward(self, x):
            self.synced.append(not getattr(self, "inside", False))
            return self.inner(x)

    model = Counting(supernet)
    supernet.zero_grad(set_to_none=True)
    sandwich_step(model, supernet, sandwich_configs(supernet, 4, subnet_rng(0, 0, 0)),
                  torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    assert model.entered == 3 and model.synced == [False, False, False, True]


def test_resumed_and_sharded_passes_cut_the_same_batches():
    from autoslim.data.sources import load_dataset

    data = load_dataset("digits")

    def batches(**kwargs):
        generator = torch.Generator().manual_seed(3)
        return list(data.batches("train", 64, shuffle=True, augment=True, generator=generator, drop_last=True, **kwargs))

    whole = batches()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[5:], batches(start=5)))
    ranks = [batches(start=2, shard=(rank, 2)) for rank in (0, 1)]
    for full, *parts in zip(whole[2:], *ranks):
        assert torch.equal(full[0][0::2], parts[0][0]) and torch.equal(full[0][1::2], parts[1][0])
    with pytest.raises(ValueError, match="shard"):
        batches(shard=(0, 3))  # 64 is not a multiple of 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_applies_on_glibc():
    from autoslim.devices import keep_freed_memory

    assert keep_freed_memory() and keep_freed_memory()  # applied, and idempotent

    class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h)
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    before = mallinfo2()  # blocks mapped before the setting stay mapped
    block = torch.ones(64 << 18)  # 64 MiB: above the largest mmap threshold glibc allows (32 MiB)
    after = mallinfo2()
    assert (after.hblks, after.hblkhd) == (before.hblks, before.hblkhd)  # not mapped, so not unmapped on free
    assert after.uordblks - before.uordblks >= block.numel() * 4  # it came from the heap


def test_optimizer_groups_and_schedule(supernet, space):
    settings = resolve_settings(space, weight_decay=1e-3)
    optimizer = build_optimizer(supernet, settings)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(supernet.parameters()))
    assert decay["nesterov"] and decay["momentum"] == 0.9
    schedule = WarmupCosine(10, 110)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.5) and schedule(110) == pytest.approx(0.0, abs=1e-12)
    assert all(schedule(s) >= schedule(s + 1) for s in range(10, 110))


def test_settings_from_recipe_scale_lr_and_reject_bad_values(space):
    settings = resolve_settings(space)
    assert settings.epochs == max(1, round(space.recipe.epochs * space.fraction))
    assert settings.lr == space.recipe.lr and settings.batch_size == space.recipe.batch_size
    doubled = resolve_settings(space, batch_size=2 * space.recipe.batch_size)
    assert doubled.lr == pytest.approx(2 * space.recipe.lr)
    assert resolve_settings(space, batch_size=256, lr=0.05).lr == 0.05
    assert resolve_settings(space, fraction=0.5).epochs == round(space.recipe.epochs * 0.5)
    for bad, match in [({"epochs": 0}, "epochs"), ({"lr": -0.1}, "lr"), ({"num_subnets": 1}, "num_subnets"),
                       ({"device": "tpu"}, "device"), ({"epochs": 3, "fraction": 0.5}, "not both"),
                       ({"bogus": 1}, "unknown setting 'bogus'")]:
        with pytest.raises(ValueError, match=match):
            resolve_settings(space, **bad)


# -- runs: outputs, resume, interruption, NaN ------------------------------------------------------


def test_cli_run_writes_every_output(finished_run):
    out, output = finished_run
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.csv", "run.yaml", "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("space", "dataset", "epochs", "largest_accuracy", "smallest_accuracy", "seconds"):
        assert summary[key] is not None, key
    assert summary["space"] == "digits_cnn" and summary["dataset"] == "digits" and summary["epochs"] == 1
    assert 0 <= summary["smallest_accuracy"] <= 1 and summary["largest_macs"] > summary["smallest_macs"]
    settings = load_settings(out / "run.yaml")
    assert settings.epochs == 1 and settings.batch_size == 128 and settings.lr == pytest.approx(0.2)
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,kind") and lines[-1].split(",")[2] == "eval"
    assert "test accuracy" in output and "largest" in output
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["space_options"]["num_classes"] == 10 and state["data"]["split"]["dataset"] == "digits"
    assert {"python", "torch"} <= set(state["rng"]) and state["finished"] and state["step"] == 10


def test_load_run_reopens_weights_settings_and_data(finished_run):
    out, _ = finished_run
    run = load_run(out)
    state = load_checkpoint(out / "checkpoint.pt")
    assert _states_equal(run.supernet.state_dict(), state["model"])
    assert run.settings == load_settings(out / "run.yaml") and run.finished and run.epoch == 1
    data = run.load_data()
    assert data.split_info() == run.split and len(data.search) == run.split["search_size"] > 0
    assert run.evaluation["largest_accuracy"] == json.loads((out / "summary.json").read_text())["largest_accuracy"]


def test_weights_only_copy_reopens_the_same_run_but_cannot_resume(tmp_path, finished_run):
    out, _ = finished_run
    copy = tmp_path / "weights" / "checkpoint.pt"
    size = save_weights_only(out / "checkpoint.pt", copy)
    assert size == copy.stat().st_size < (out / "checkpoint.pt").stat().st_size
    state = load_checkpoint(copy)
    assert state["weights_only"] and not set(TRAINING_KEYS) & set(state)
    run, reopened = load_run(out), load_run(copy.parent)
    assert _states_equal(reopened.supernet.state_dict(), run.supernet.state_dict())
    assert (reopened.settings, reopened.split, reopened.step, reopened.finished) == \
        (run.settings, run.split, run.step, run.finished)
    before = _sha(copy)
    result = _invoke("--epochs", "1", "--batch-size", "128", "--num-subnets", "3", "--out", str(copy.parent))
    assert result.exit_code == 1 and "trained weights only" in result.output and "Traceback" not in result.output
    assert _sha(copy) == before


def test_rerun_of_a_finished_run_trains_nothing(finished_run):
    out, _ = finished_run
    before = _sha(out / "checkpoint.pt")
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_cnn", "--epochs", "1", "--batch-size", "128",
                                      "--num-subnets", "3", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _sha(out / "checkpoint.pt") == before


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, space):
    settings = resolve_settings(space, epochs=2, num_subnets=3, **FAST)
    whole = train_supernet(settings, tmp_path / "whole")

    def interrupt(report):
        if report.kind == "step" and report.step == 13:  # mid second epoch, between log rows
            os.kill(os.getpid(), signal.SIGINT)

    first = train_supernet(settings, tmp_path / "split", callback=interrupt)
    assert first.interrupted and first.summary["steps"] == 13
    state = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert state["step"] == 13 and state["epoch"] == 1 and not state["finished"]
    resumed = train_supernet(settings, tmp_path / "split")
    assert not resumed.interrupted and resumed.summary["steps"] == 20
    assert _states_equal(whole.supernet.state_dict(), resumed.supernet.state_dict())
    assert resumed.summary["largest_accuracy"] == whole.summary["largest_accuracy"]
    final = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert _states_equal(final["model"], load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, space, monkeypatch):
    import autoslim.training.supernet_training

    settings = resolve_settings(space, epochs=3, num_subnets=2, **FAST)
    out, steps, saved = tmp_path / "nan", [], {}
    real_step = autoslim.training.supernet_training.sandwich_step

    def exploding_step(model, supernet, *args, **kwargs):
        steps.append(1)
        if len(steps) == 13:  # in the second epoch: the weights go bad
            with torch.no_grad():
                next(p for p in supernet.parameters() if p.ndim > 1).fill_(float("nan"))
        return real_step(model, supernet, *args, **kwargs)

    def remember_checkpoint(report):
        if report.kind == "epoch":
            saved[report.epoch] = _sha(out / "checkpoint.pt")

    monkeypatch.setattr(autoslim.training.supernet_training, "sandwich_step", exploding_step)
    with pytest.raises(DivergedError, match=r"diverged: loss nan at step 16 .*last good checkpoint \(epoch 1\) is kept"):
        train_supernet(settings, out, callback=remember_checkpoint)
    assert list(saved) == [1] and _sha(out / "checkpoint.pt") == saved[1]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, space, monkeypatch):
    import autoslim.checkpoint

    settings = resolve_settings(space, epochs=2, num_subnets=2, **FAST)
    out, saves, real_save = tmp_path / "full", [], torch.save

    def disk_fills_up(state, stream):
        saves.append(1)
        if len(saves) == 2:
            stream.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(state, stream)

    monkeypatch.setattr(autoslim.checkpoint.torch, "save", disk_fills_up)
    with pytest.raises(RuntimeError, match="No space left on device; the previous checkpoint is kept"):
        train_supernet(settings, out)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left behind


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys, torch\n"
        "from autoslim.training.settings import resolve_settings\n"
        "from autoslim.spaces import load_space\n"
        "from autoslim.training.supernet_training import train_supernet\n"
        "settings = resolve_settings(load_space('digits_cnn'), epochs=1, batch_size=128, log_every=5, device='cpu')\n"
        "result = train_supernet(settings, sys.argv[1])\n"
        "torch.save(result.supernet.state_dict(), os.path.join(sys.argv[2], f\"rank{os.environ['RANK']}.pt\"))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(tmp_path / "run"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert _states_equal(rank0, rank1)
    assert _states_equal(rank0, load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels_last", ["off", "on"])
def test_cuda_run_with_bf16(tmp_path, space, channels_last):
    settings = resolve_settings(space, epochs=1, batch_size=128, device="cuda", amp="on", channels_last=channels_last)
    result = train_supernet(settings, tmp_path / "cuda")
    assert result.summary["device"].startswith("cuda") and result.summary["largest_accuracy"] > 0.3
    run = load_run(tmp_path / "cuda", device="cuda")
    assert next(run.supernet.parameters()).is_cuda


# -- bad input through the CLI ---------------------------------------------------------------------


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["train-supernet", "--space", "digits_cnn", "--device", "cpu", *args])


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--lr", "-0.1"], "lr must be a positive number"),
    (["--batch-size", "5000"], "batch size 5000 is larger than the training split"),
    (["--num-subnets", "1"], "num_subnets must be an integer >= 2"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "CIFAR-10 not found"),
    (["--resume"], "holds no checkpoint.pt"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    result = _invoke("--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 or message in result.output.strip().splitlines()[-1]


def test_epochs_and_fraction_together_is_a_usage_error(tmp_path):
    result = _invoke("--out", str(tmp_path), "--epochs", "2", "--fraction", "0.5")
    assert result.exit_code == 2 and "not both" in result.output


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_checkpoint_names_the_file(tmp_path, finished_run, damage):
    out = tmp_path / "damaged"
    shutil.copytree(finished_run[0], out)
    checkpoint = out / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint at all")
    result = _invoke("--epochs", "1", "--batch-size", "128", "--num-subnets", "3", "--out", str(out))
    assert result.exit_code == 1
    assert str(checkpoint) in result.output and "not a readable checkpoint" in result.output
    assert "Traceback" not in result.output and "--force" in result.output
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_run(out)


def test_another_space_or_settings_in_the_run_need_force(tmp_path, finished_run):
    out = tmp_path / "other"
    shutil.copytree(finished_run[0], out)
    before = _sha(out / "checkpoint.pt")
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "resnet20_cifar", "--dataset", "digits",
                                      "--out", str(out)])
    assert result.exit_code == 1 and "holds a run of space 'digits_cnn'" in result.output
    assert "--force" in result.output
    result = _invoke("--epochs", "1", "--batch-size", "128", "--num-subnets", "3", "--lr", "0.05", "--out", str(out))
    assert result.exit_code == 1 and "lr 0.2 (given 0.05)" in result.output and "--resume" in result.output
    assert _sha(out / "checkpoint.pt") == before
    result = _invoke("--epochs", "1", "--batch-size", "64", "--num-subnets", "2", "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "run.yaml").read_text())["batch_size"] == 64
    assert load_checkpoint(out / "checkpoint.pt")["settings"]["num_subnets"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_cnn", "--device", "cuda",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "CUDA is not available here" in result.output


def test_one_cycle_schedule_shape():
    from autoslim.training.optim import OneCycle, lr_factor

    factor = lr_factor("one-cycle", warmup_steps=10, total_steps=1000)
    assert isinstance(factor, OneCycle)
    assert factor(0) == pytest.approx(1 / 25)
    assert factor(150) == pytest.approx(1.0)  # the peak at 15% of the steps
    assert factor(75) == pytest.approx((1 / 25 + 1) / 2)
    assert factor(1000) == pytest.approx(1e-4)
    rising = [factor(s) for s in range(0, 151)]
    falling = [factor(s) for s in range(150, 1000)]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", warmup_steps=0, total_steps=10)
