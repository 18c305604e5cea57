"""``autoslim latency``, ``search --latency``, ``export-config --latency`` and ``cost --latency`` on a briefly trained
digits supernet, timed by a fake timer (so that every figure is exact), and one real-timing check marked slow."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from latency_fakes import FakeTimer

import autoslim.latency
import autoslim.latency.cache
from autoslim.channel_config import load_config
from autoslim.checkpoint import load_run
from autoslim.latency import LatencyKey, load_model, model_path
from autoslim.spaces import load_space
from autoslim.training.settings import resolve_settings
from autoslim.training.supernet_training import train_supernet
from cli.main import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_supernet(resolve_settings(load_space("digits_cnn"), epochs=1, device="cpu"), out)
    return out


@pytest.fixture
def fake_timer(monkeypatch):
    """Every timer the commands make is a fake one (of the key they ask for)."""
    made = []

    def make(key, settings=None):
        made.append(FakeTimer(key))
        return made[-1]

    monkeypatch.setattr(autoslim.latency, "make_timer", make)
    monkeypatch.setattr(autoslim.latency.cache, "make_timer", make)
    return made


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, message, *, after_progress=False):
    """Exit code 1 and one error line naming ``message`` (after the progress lines of a measurement, if allowed)."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert message in lines[-1] and lines[-1].startswith("error:") and "Traceback" not in result.output
    assert len(lines) == 1 or after_progress, result.output
    return lines[-1]


@pytest.fixture
def fresh_run(run_dir, tmp_path):
    """The run, copied without any latency model."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("latency", "search*"))
    return copy


def _range(run):
    model = load_model(model_path(run, LatencyKey()))
    supernet = load_run(run).supernet
    predict = model.bind(supernet)
    return predict(supernet.smallest_config()), predict(supernet.largest_config()), predict


def test_latency_measures_once_then_uses_the_cache(fresh_run, fake_timer):
    result = _invoke("latency", fresh_run, "--networks", 5)
    assert result.exit_code == 0, result.output
    path = fresh_run / "latency" / "cpu-torch-b1-t1.json"
    assert path.is_file() and f"{path}: measured" in " ".join(result.output.split())
    assert "median |error| on the fitted networks 0.0%" in " ".join(result.output.split())
    assert len(fake_timer) == 1 and fake_timer[0].network_calls == 5
    result = _invoke("latency", fresh_run)
    assert result.exit_code == 0 and ": cached;" in result.output and len(fake_timer) == 1
    result = _invoke("latency", fresh_run, "--batch", 8, "--threads", 2, "--networks", 3)
    assert result.exit_code == 0 and (fresh_run / "latency" / "cpu-torch-b8-t2.json").is_file()


def test_latency_checks_the_model_on_networks_it_has_not_seen(fresh_run, fake_timer):
    result = _invoke("latency", fresh_run, "--networks", 5, "--check", 6)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "on 6 networks it has not seen" in text and "Spearman 1.000, median |error| 0.0%" in text
    assert fake_timer[-1].network_calls == 6 + 1  # the six and the full network, timed after the model
    result = _invoke("latency", fresh_run)  # cached: no check unless asked, and the hint names the option
    assert result.exit_code == 0 and f"autoslim latency {fresh_run} --check 30" in " ".join(result.output.split())


@pytest.mark.parametrize("args,message", [
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
    (["--device", "tpu"], "unknown latency device 'tpu'"),
    (["--batch", "0"], "batch must be a positive integer"),
    (["--check", "2"], "--check needs at least 3 networks"),
])
def test_latency_refuses_bad_options_in_one_line(run_dir, args, message):
    assert message in _one_line_error(_invoke("latency", run_dir, *args), message)


def test_onnxruntime_without_its_packages_is_one_line(run_dir, monkeypatch):
    monkeypatch.setattr(autoslim.latency.timing.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else object())
    line = _one_line_error(_invoke("latency", run_dir, "--runtime", "onnxruntime"), "pip install 'autoslim[onnx]'")
    assert "onnxruntime" in line


def test_search_under_latency_picks_within_the_predicted_budget(fresh_run, fake_timer, tmp_path):
    assert _invoke("latency", fresh_run, "--networks", 5).exit_code == 0
    low, high, predict = _range(fresh_run)
    budget = round(low + 0.4 * (high - low), 3)
    label = f"latency-{budget:g}ms"
    out = tmp_path / "search"
    result = _invoke("search", fresh_run, "--latency", f"{budget}ms", "--flops", "2M", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert label in result.output and "cached" in result.output

    with open(out / "trajectory.csv") as stream:
        rows = list(csv.DictReader(stream))
    latencies = [float(row["latency_ms"]) for row in rows]
    assert all(b < a for a, b in zip(latencies, latencies[1:]))  # every step lowered the predicted latency
    config = load_config(out / "configs" / f"{label}.yaml")
    step = int(config.source["step"])
    assert latencies[step] <= budget < latencies[step - 1]  # the first point within the budget
    assert predict(config.channels) == pytest.approx(latencies[step])

    latency = config.cost["latency"]
    assert latency["predicted_ms"] == pytest.approx(latencies[step])
    assert latency["measured_ms"] == pytest.approx(latency["predicted_ms"])  # the fake timer is exact
    assert latency["runtime"] == "torch" and latency["batch"] == 1 and "cpu" in latency["description"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["latency"]["identity"].startswith("cpu-torch-b1-t1@")
    drift = summary["latency"]["drift"]  # the full network, timed beside the picks, ran as fast as in the model
    assert drift["ratio"] == pytest.approx(1.0) and drift["warning"] is None and "warning" not in result.output
    assert drift["full_network_ms_now"] == pytest.approx(high)
    target = summary["targets"][label]
    assert set(target["latency"]) == {"predicted_ms", "measured_ms"}
    assert target["uniform"]["latency"]["predicted_ms"] <= budget
    assert "latency" in summary["targets"]["flops-2M"]  # every pick is measured in a latency search
    with open(out / "pareto.csv") as stream:
        front = list(csv.DictReader(stream))
    assert all(row["latency_ms"] for row in front)

    exported = tmp_path / "exported.yaml"
    result = _invoke("export-config", out, "--latency", f"{budget}ms", "--out", exported)
    assert result.exit_code == 0, result.output
    assert load_config(exported).channels == config.channels
    assert "full network" in result.output and "widest within" in result.output
    assert {"predicted_ms", "measured_ms", "description"} <= set(load_config(exported).cost["latency"])


def test_a_device_slower_than_when_the_model_was_measured_is_one_warning(fresh_run, monkeypatch, tmp_path):
    monkeypatch.setattr(autoslim.latency.cache, "make_timer", lambda key, settings=None: FakeTimer(key))
    assert _invoke("latency", fresh_run, "--networks", 5).exit_code == 0
    low, high, _ = _range(fresh_run)
    slower = FakeTimer(LatencyKey(), offset_ms=0.25 * high)  # every whole network now takes 0.25 x full longer
    monkeypatch.setattr(autoslim.latency, "make_timer", lambda key, settings=None: slower)
    out = tmp_path / "search"
    result = _invoke("search", fresh_run, "--latency", f"{round(low + 0.5 * (high - low), 3)}ms", "--out", out)
    assert result.exit_code == 0, result.output
    assert slower.layer_calls == 0 and slower.network_calls > 0  # the cached model was used, the picks were timed
    assert "warning: the device runs 25% slower than when the latency model was measured" in result.output
    drift = json.loads((out / "summary.json").read_text())["latency"]["drift"]
    assert drift["ratio"] == pytest.approx(1.25) and drift["full_network_ms_then"] == pytest.approx(high)
    label = next(p.stem for p in (out / "configs").glob("latency-*.yaml"))
    assert load_config(out / "configs" / f"{label}.yaml").cost["latency"]["drift_ratio"] == pytest.approx(1.25)
    result = _invoke("export-config", out, "--latency", label[len("latency-"):], "--out", tmp_path / "e.yaml")
    assert result.exit_code == 0, result.output
    assert "25% slower" in result.output
    assert load_config(tmp_path / "e.yaml").cost["latency"]["drift_ratio"] == pytest.approx(1.25)


def test_search_builds_the_model_on_demand(fresh_run, fake_timer, tmp_path):
    result = _invoke("search", fresh_run, "--latency", "0.001ms", "--out", tmp_path / "s")
    _one_line_error(result, "reachable latency", after_progress=True)
    assert (fresh_run / "latency" / "cpu-torch-b1-t1.json").is_file()  # measured before the budget was checked
    low, high, _ = _range(fresh_run)
    result = _invoke("search", fresh_run, "--latency", f"{high * 2}ms", "--out", tmp_path / "s")
    _one_line_error(result, "already met by the largest")


def test_search_refuses_an_unknown_runtime_in_one_line(run_dir, tmp_path):
    _one_line_error(_invoke("search", run_dir, "--latency", "1ms", "--runtime", "nope", "--out", tmp_path / "s"),
                    "unknown runtime 'nope'")
    line = _one_line_error(_invoke("search", run_dir, "--latency", "soon", "--out", tmp_path / "s"), "cannot read latency")
    assert not (tmp_path / "s").exists() or not (tmp_path / "s" / "trajectory.csv").exists(), line


def test_a_search_without_latency_resumes_as_before(run_dir, tmp_path):
    out = tmp_path / "s"
    assert _invoke("search", run_dir, "--flops", "1M", "--out", out).exit_code == 0
    whole = (out / "trajectory.csv").read_text().splitlines()
    assert whole[0].endswith(",latency_ms") and all(line.endswith(",") for line in whole[1:])
    # as written before latency: no latency_ms column, killed after three steps
    (out / "trajectory.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in whole[:4]) + "\n")
    result = _invoke("search", run_dir, "--flops", "1M", "--out", out)
    assert result.exit_code == 0 and "3 trajectory points already made" in " ".join(result.output.split())
    again = (out / "trajectory.csv").read_text().splitlines()
    strip = [line.split(",") for line in again], [line.split(",") for line in whole]
    seconds = 10  # the wall-time column differs
    assert [r[:seconds] + r[seconds + 1:] for r in strip[0]] == [r[:seconds] + r[seconds + 1:] for r in strip[1]]


def test_a_latency_search_resumed_with_another_model_needs_force(fresh_run, fake_timer, tmp_path):
    out = tmp_path / "s"
    assert _invoke("latency", fresh_run, "--networks", 4).exit_code == 0
    low, high, _ = _range(fresh_run)
    budget = f"{(low + high) / 2:.4f}ms"
    assert _invoke("search", fresh_run, "--latency", budget, "--out", out).exit_code == 0
    assert _invoke("latency", fresh_run, "--networks", 4, "--rebuild").exit_code == 0  # re-measured: a new model
    result = _invoke("search", fresh_run, "--latency", budget, "--out", out)
    assert result.exit_code == 1 and "latency_model" in result.output and "--force" in result.output


def test_cost_measures_a_config_beside_the_uniform_networks(run_dir, fake_timer, tmp_path):
    config = tmp_path / "u.yaml"
    assert _invoke("cost", "digits_cnn", "--width", "0.75", "--save-config", config).exit_code == 0
    result = _invoke("cost", "digits_cnn", "--config", config, "--latency", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["latency"]
    assert found["runtime"] == "torch" and found["searched"]["measured_ms"] > 0
    assert found["full"]["measured_ms"] > found["searched"]["measured_ms"]
    assert found["uniform_equal_macs"]["width"] is not None
    result = _invoke("cost", "digits_cnn", "--config", config, "--latency")
    assert result.exit_code == 0 and "full network" in result.output
    assert "not faster than the uniform" in result.output  # a uniform network is not faster than itself
    result = _invoke("cost", "digits_cnn", "--width", "0.5", "--latency")
    assert result.exit_code == 0 and "widest" not in result.output and "full network" in result.output


_TIME_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import statistics, sys, time, warnings
    import torch
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    model = torch.jit.load(sys.argv[1]).eval()
    x = torch.randn(1, *[int(v) for v in sys.argv[2].split(",")])
    with torch.inference_mode():
        for _ in range(20):
            model(x)
        times = []
        for _ in range(200):
            began = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - began)
    print(statistics.median(times) * 1e3)
""")


@pytest.mark.slow
def test_a_latency_pick_runs_within_its_budget_in_a_fresh_process(run_dir, tmp_path):
    """Real timing (tolerant: the machine may be busy): the network of ``--latency X``, exported as TorchScript and
    timed in a fresh process at batch 1 on one thread, runs within 1.5x the budget (the target is 15%)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("latency", "search*"))
    assert _invoke("latency", run, "--networks", 12).exit_code == 0
    low, high, _ = _range(run)
    budget = low + 0.5 * (high - low)
    out = tmp_path / "search"
    result = _invoke("search", run, "--latency", f"{budget:.4f}ms", "--out", out)
    assert result.exit_code == 0, result.output
    label = next(p.stem for p in (out / "configs").glob("latency-*.yaml"))
    config = load_config(out / "configs" / f"{label}.yaml")
    assert config.cost["latency"]["predicted_ms"] <= budget
    model = tmp_path / "model.pt"
    result = _invoke("export-config", out, "--step", config.source["step"], "--out", tmp_path / "c.yaml",
                     "--model", model)
    assert result.exit_code == 0, result.output
    timed = subprocess.run([sys.executable, "-c", _TIME_IN_A_FRESH_PROCESS, str(model), "1,8,8"],
                           capture_output=True, text=True, check=True)
    measured = float(timed.stdout.strip().splitlines()[-1])
    assert measured <= 1.5 * budget, (measured, budget, config.cost["latency"])
