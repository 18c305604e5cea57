"""results/cifar10_resnet20/make_table.py on made-up run summaries: the tables it builds and what it leaves alone."""

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "cifar10_resnet20" / "make_table.py"


def _summary(accuracy, macs, params, *, width=None, baseline=None):
    summary = {"network": "searched" if width is None else "uniform", "accuracy": accuracy, "macs": macs,
               "params": params, "epochs": 15, "finished": True, "seconds": 100.0}
    if width is not None:
        summary["width"] = width
    if baseline is not None:
        summary["baseline"] = baseline
    return summary


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _rows(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_tables_compare_searched_configs_with_the_uniform_line(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    # uniform networks at 10M MACs (70%) and 30M (80%): the line gives 75% at 20M MACs
    for seed, (searched, uniform) in enumerate([(0.78, 0.69), (0.76, 0.71)]):
        _write(runs / "retrain" / "flops-20M" / f"seed{seed}" / "summary.json",
               _summary(searched, 20_000_000, 50_000, baseline=_summary(uniform, 10_000_000, 100_000, width=0.5)))
        _write(runs / "bracket" / "uniform-0.9x" / f"seed{seed}" / "summary.json",
               _summary(0.80, 30_000_000, 300_000, width=0.9))
    # a supernet still training must not replace the committed supernet figures
    _write(runs / "supernet" / "summary.json", {"finished": False})
    _write(runs / "supernet" / "metrics.csv", "partial\n")
    _write(results / "supernet" / "metrics.csv", "committed\n")

    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    (table,) = _rows(results / "table.csv")
    assert (table["budget"], table["seeds"]) == ("flops-20M", "2")
    assert float(table["autoslim_acc_mean"]) == 77.0 and float(table["uniform_acc_mean"]) == 70.0
    assert float(table["autoslim_acc_std"]) == 1.41  # sample sd of 78 and 76
    (line,) = _rows(results / "line.csv")
    assert float(line["uniform_at_macs"]) == 75.0 and float(line["diff_macs"]) == 2.0
    # by params the searched config (50k) lies below the narrowest uniform network (100k): its accuracy, marked
    assert (line["params_bound"], float(line["uniform_at_params"])) == ("<=", 70.0)
    assert (results / "retrain" / "flops-20M" / "seed1.json").is_file()
    assert (results / "bracket" / "uniform-0.9x" / "seed0.json").is_file()
    assert (results / "retrained.png").stat().st_size > 0
    assert (results / "supernet" / "metrics.csv").read_text() == "committed\n"
