"""The run-and-report code train-supernet and retrain share, and who changes the process's malloc settings."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import autoslim.devices
from autoslim.spaces import load_space
from autoslim.training.settings import resolve_settings
from autoslim.training.supernet_training import train_supernet
from cli.main import cli
from cli.running import cost_row


def test_cost_row_formats_counts_and_missing_values():
    assert cost_row("largest", 300774272, 3504872, 0.91234, None) == ["largest", "300.77M", "3.50M", "0.9123", "-"]


@pytest.fixture
def malloc_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(autoslim.devices, "keep_freed_memory", lambda: calls.append(1) or True)
    return calls


def test_the_library_leaves_malloc_alone_and_the_command_sets_it(tmp_path, malloc_calls):
    settings = resolve_settings(load_space("digits_cnn"), epochs=1, batch_size=128, num_subnets=2, device="cpu")
    train_supernet(settings, tmp_path / "library")
    assert malloc_calls == []
    result = CliRunner().invoke(cli, ["train-supernet", "--space", "digits_cnn", "--epochs", "1", "--batch-size", "128",
                                      "--num-subnets", "2", "--device", "cpu", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert malloc_calls == [1] and "epoch   1/1  test accuracy: largest" in result.output
