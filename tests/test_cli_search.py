"""``autoslim search`` end to end on a briefly trained digits supernet: files, targets, resume, bad input."""

import csv
import json

import pytest
from click.testing import CliRunner

from autoslim.channel_config import load_config
from autoslim.network.supernet import uniform_within
from autoslim.search.runner import SearchSettings, search_run
from autoslim.search.targets import parse_targets
from autoslim.spaces import build_supernet, load_space
from autoslim.training.settings import resolve_settings
from autoslim.training.supernet_training import train_supernet
from cli.main import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_supernet(resolve_settings(load_space("digits_cnn"), epochs=1, device="cpu"), out)
    return out


def _rows(path):
    with open(path) as stream:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(stream)]


def test_search_writes_configs_meeting_each_target(run_dir, tmp_path):
    out = tmp_path / "search"
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--flops", "500k", "--params", "50k",
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("trajectory.csv", "pareto.csv", "pareto.png", "run.yaml", "summary.json",
                 "configs/flops-2M.yaml", "configs/flops-500k.yaml", "configs/params-50k.yaml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    supernet = build_supernet(load_space("digits_cnn"))
    for label, limit in (("flops-2M", 2_000_000), ("flops-500k", 500_000)):
        config = load_config(out / "configs" / f"{label}.yaml")
        cost = supernet.cost(supernet.validate_config(config.channels))
        assert cost.macs <= limit and config.cost["macs"] == cost.macs == summary["targets"][label]["macs"]
        assert summary["targets"][label]["uniform"]["macs"] <= limit
    assert supernet.cost(load_config(out / "configs" / "params-50k.yaml").channels).params <= 50_000
    macs = [int(row["macs"]) for row in _rows(out / "trajectory.csv")]
    assert all(b < a for a, b in zip(macs, macs[1:]))
    assert "flops-500k" in result.output
    assert (summary["criterion"], summary["signal"]) == ("drop-per-cost", "kl")
    assert "KL divergence" in summary["decided_by"] and "per unit of the targeted cost" in summary["decided_by"]
    assert summary["decided_by"] in " ".join(result.output.split())
    assert all(row["kl"] for row in _rows(out / "trajectory.csv"))
    assert summary["work"]["batch"] == 144  # all of the held-out split (10% of the 1,437 digits training images)
    assert summary["work"]["slices"] == 1 and "choices" not in summary


def test_the_papers_criterion_reports_how_narrowly_it_chose(run_dir, tmp_path):
    out = tmp_path / "search"
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "1M", "--criterion", "accuracy",
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert "the paper's rule" in summary["decided_by"]
    batch, choices = summary["work"]["batch"], summary["choices"]
    leads = [round((float(r["score"]) - float(r["runner_up"])) * batch) for r in _rows(out / "trajectory.csv")
             if r["runner_up"]]
    assert choices["steps"] == len(leads) > 0 and choices["ties"] == leads.count(0)
    assert f"{choices['ties']} of {choices['steps']} steps were ties" in " ".join(result.output.split())


def test_killed_and_resumed_equals_uninterrupted(run_dir, tmp_path):
    targets = parse_targets(["600k"], [])
    settings = SearchSettings(run=str(run_dir), targets=("flops-600k",))
    search_run(settings, tmp_path / "whole", targets)

    def kill(step):
        if step.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search_run(settings, tmp_path / "split", targets, on_step=kill)
    assert len(_rows(tmp_path / "split" / "trajectory.csv")) == 5
    search_run(settings, tmp_path / "split", targets)
    assert _rows(tmp_path / "split" / "trajectory.csv") == _rows(tmp_path / "whole" / "trajectory.csv")


def test_reuse_and_plain_search_agree(run_dir, tmp_path):
    targets = parse_targets(["1M"], [])
    fast = search_run(SearchSettings(run=str(run_dir)), tmp_path / "a", targets)
    plain = search_run(SearchSettings(run=str(run_dir), reuse=False), tmp_path / "b", targets)
    assert fast.steps == plain.steps
    assert fast.work["macs_executed"] < plain.work["macs_executed"]


@pytest.mark.parametrize("args,message", [
    (["--flops", "1k"], "reachable"),
    (["--flops", "100M"], "already met"),
    (["--flops", "12X"], "cannot read budget"),
    ([], "give at least one target"),
])
def test_bad_targets(run_dir, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_other_settings_need_force(run_dir, tmp_path):
    out = tmp_path / "s"
    assert CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out),
                                      "--criterion", "drop-per-mac"])
    assert result.exit_code == 1 and "--force" in result.output
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out),
                                      "--criterion", "drop-per-mac", "--force"])
    assert result.exit_code == 0, result.output


def test_missing_run_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["search", str(tmp_path / "nothing"), "--flops", "1M"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1


def test_uniform_within_is_the_widest_fitting_width():
    supernet = build_supernet(load_space("resnet20_cifar"))
    width, config = uniform_within(supernet, macs=30_000_000)
    assert supernet.cost(config).macs <= 30_000_000
    assert supernet.cost(supernet.uniform_config(width + 0.01)).macs > 30_000_000
    assert uniform_within(supernet, macs=1000) is None


def test_cli_defaults_are_the_librarys_and_bound_reaches_the_search(run_dir, tmp_path):
    from autoslim.search.sliced import CONFIDENCE, INDIFFERENCE, SLICE_SIZE
    from cli.search import search

    defaults = {option.name: option.default for option in search.params}
    assert (defaults["slice_size"], defaults["bound"], defaults["indifference"]) == (SLICE_SIZE, CONFIDENCE, INDIFFERENCE)
    settings = SearchSettings(run="r")
    assert (settings.slice_size, settings.confidence, settings.indifference) == (SLICE_SIZE, CONFIDENCE, INDIFFERENCE)
    for args, confidence in ((["--bound", "3"], 3.0), (["--bound", "0"], None), (["--exhaustive"], None)):
        out = tmp_path / f"s{len(args)}{confidence}"
        result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out), *args])
        assert result.exit_code == 0, result.output
        saved = (out / "run.yaml").read_text()
        assert f"confidence: {confidence if confidence else 'null'}" in saved, saved
    out = tmp_path / "zone"
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out), "--indifference", "0"])
    assert result.exit_code == 0 and "indifference: 0.0" in (out / "run.yaml").read_text()
    result = CliRunner().invoke(cli, ["search", str(run_dir), "--flops", "2M", "--out", str(out)])  # another zone
    assert result.exit_code == 1 and "indifference: 0.0 -> 0.1" in result.output
