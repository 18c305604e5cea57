"""results/cifar10_resnet20_latency/make_table.py on made-up files: the pick against the uniform line at its
measured latency, and the uniform networks with their own latencies."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "cifar10_resnet20_latency" / "make_table.py"


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _made_up(tmp_path):
    runs, scratch = tmp_path / "runs", tmp_path / "scratch"
    _write(runs / "search" / "summary.json", {"targets": {"latency-1ms": {
        "macs": 30_000_000, "params": 150_000, "latency": {"predicted_ms": 0.95, "measured_ms": 0.97}}}})
    _write(runs / "search" / "configs" / "latency-1ms.yaml", "channels: {conv1: 16}\n")
    for seed, accuracy in enumerate([0.84, 0.86]):
        _write(runs / "retrain" / "latency-1ms" / f"seed{seed}" / "summary.json",
               {"accuracy": accuracy, "finished": True})
    _write(runs / "retrain" / "latency-1ms" / "seed2" / "summary.json", {"accuracy": 0.1, "finished": False})
    # uniform networks: 0.55x (from a baseline) at 0.8 ms and 0.69x (a bracket) at 1.2 ms
    for seed, accuracy in enumerate([0.80, 0.82]):
        _write(scratch / "retrain" / "flops-20M" / f"seed{seed}.json", {"accuracy": 0.5, "baseline": {
            "width": 0.55, "accuracy": accuracy}})
        _write(scratch / "bracket" / "uniform-0.69x" / f"seed{seed}.json", {"accuracy": accuracy + 0.04})
    _write(runs / "latency.csv", "name,width,macs,params,latency_ms,rounds_ms\n"
                                 "latency-1ms,,30000000,150000,1.0,1.0 1.0\n"
                                 "uniform 0.55x,0.55,10314048,68786,0.8,0.8 0.8\n"
                                 "uniform 0.69x,0.69,29589984,160938,1.2,1.2 1.2\n")
    _write(runs / "check.txt", "latency-1ms: budget 1.000 ms, fresh process 0.990 ms\n")
    return runs, scratch


def test_the_pick_is_set_against_the_uniform_line_at_its_latency(tmp_path):
    runs, scratch = _made_up(tmp_path)
    results = tmp_path / "results"
    subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results), str(scratch)], check=True,
                   capture_output=True)
    rows = {r["network"]: r for r in csv.DictReader(open(results / "table.csv"))}
    assert list(rows) == ["latency-1ms", "uniform 0.55x", "uniform 0.69x"]
    pick = rows["latency-1ms"]
    assert float(pick["acc_mean"]) == pytest.approx(85.0) and float(pick["acc_sd"]) == pytest.approx(1.41, abs=0.01)
    assert pick["seeds"] == "2"  # the unfinished seed is not collected
    # halfway between 0.8 ms (81 %) and 1.2 ms (85 %): 83 %, so the pick is 2 points above
    assert float(pick["uniform_at_latency"]) == pytest.approx(83.0)
    assert float(pick["diff_latency"]) == pytest.approx(2.0)
    assert float(rows["uniform 0.69x"]["acc_mean"]) == pytest.approx(85.0)
    assert (results / "check.txt").is_file() and (results / "search" / "configs" / "latency-1ms.yaml").is_file()
    assert "| latency-1ms | 30.00M | 150.0k | 1.000 (0.950) | 2 | 85.00 ± 1.41 | 83.00 | +2.00 |" in \
        (results / "table.md").read_text()


def _compare_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_latency_search.py"
    spec = importlib.util.spec_from_file_location("compare_latency_search", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_macs_search_step_of_equal_latency_is_the_first_one_measured_within_it():
    first_within = _compare_module().first_within
    measured = []

    def latency(values, budget):
        def fits(i):
            measured.append(i)
            return values[i] <= budget
        return fits

    falling = [10.0 - i for i in range(10)]  # 10, 9, ..., 1 ms
    assert first_within(latency(falling, 5.5), len(falling), window=0) == 5
    assert len(set(measured)) <= 5  # bisected, not scanned
    # measured latency need not fall at every step: a later step above the budget does not move the answer, and an
    # earlier one within it that bisection skipped is found by the window
    bumpy = [10, 9, 5, 8, 7, 5, 4, 6, 3, 2]
    assert first_within(latency(bumpy, 5.5), len(bumpy), window=0) == 5
    assert first_within(latency(bumpy, 5.5), len(bumpy), window=3) == 2


def test_the_equal_latency_networks_are_chosen_from_the_medians_of_the_rounds():
    first_within_budget = _compare_module().first_within_budget
    # a step that looked slow early but whose rounds put it within the pick's median is chosen; a step whose one
    # fast round does not move its median is not
    medians = {"step 4": 2.3, "step 5": 2.05, "step 6": 1.9, "step 7": 1.5}
    assert first_within_budget(["step 4", "step 5", "step 6", "step 7"], medians, 2.0) == "step 6"
    assert first_within_budget(["step 4", "step 5", "step 6", "step 7"], medians, 2.05) == "step 5"
    assert first_within_budget(["step 4", "step 5"], medians, 2.0) is None


def test_the_uniform_ladder_holds_every_distinct_uniform_network_once():
    from autoslim.spaces import build_supernet, load_space

    supernet = build_supernet(load_space("resnet20_cifar"))
    ladder = _compare_module().uniform_ladder(supernet)
    assert ladder[-1][1] == supernet.largest_config()
    configs = [tuple(sorted(c.items())) for _, c in ladder]
    assert len(set(configs)) == len(configs) > 10
    widths = []
    for name, config in ladder:  # each named by the range of widths that give it
        low, _, high = name[:-1].partition("-")
        low, high = float(low), float(high or low)
        assert supernet.uniform_config(low) == supernet.uniform_config(high) == config
        assert low == 0.01 or supernet.uniform_config(round(low - 0.01, 2)) != config
        assert high == supernet.width_mult or supernet.uniform_config(round(high + 0.01, 2)) != config
        widths += [low, high]
    assert widths == sorted(widths)
    assert ("0.56-0.68x", supernet.uniform_config(0.6)) in ladder and ("0.69-0.81x", supernet.uniform_config(0.7)) in ladder
