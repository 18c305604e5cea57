"""results/cifar10_resnet20/make_table.py on made-up run summaries: the tables it builds and what it leaves alone."""

import csv
import json
import re
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
    assert not (results / "default.csv").exists()  # no default search


def test_default_csv_sets_the_default_search_against_the_uniform_line(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    for seed in (0, 1):  # uniform networks at 10M MACs (70%) and 30M (80%)
        _write(runs / "retrain" / "flops-20M" / f"seed{seed}" / "summary.json",
               _summary(0.77, 20_000_000, 50_000, baseline=_summary(0.70, 10_000_000, 100_000, width=0.5)))
        _write(runs / "bracket" / "uniform-0.9x" / f"seed{seed}" / "summary.json",
               _summary(0.80, 30_000_000, 300_000, width=0.9))
    # the committed default search; its 16M config retrained on two seeds, its 26M one not yet
    targets = {f"flops-{b}M": {"config": f"configs/flops-{b}M.yaml", "step": 3, "macs": b * 1_000_000 - 1_000_000,
                               "params": 60_000} for b in (26, 16)}
    _write(results / "default" / "search" / "summary.json", {"targets": targets})
    for seed, accuracy in ((0, 0.75), (1, 0.77)):
        _write(runs / "default" / "retrain" / "flops-16M" / f"seed{seed}" / "summary.json",
               _summary(accuracy, 15_000_000, 60_000))
    _write(runs / "default" / "retrain" / "flops-26M" / "seed0" / "summary.json", {"finished": False})

    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    text = (results / "default.csv").read_text().splitlines()
    assert text[0] == "budget,macs,params,seeds,acc_mean,acc_sd,uniform_at_macs,diff_macs"
    # 15M MACs: the line from 70% at 10M to 80% at 30M gives 72.5%; mean 76, sample sd of 75 and 77
    assert text[1:] == ["16M,15000000,60000,2,76.0,1.41,72.5,3.5"]
    assert (results / "default" / "retrain" / "flops-16M" / "seed1.json").is_file()
    assert not (results / "default" / "retrain" / "flops-26M").exists()  # unfinished: not collected
    assert not (results / "default_1024.csv").exists()

    # the previous default's folder gets its own table; a retraining of other channels than its pick is refused
    _write(results / "default_1024" / "search" / "summary.json", {"targets": {"flops-16M": targets["flops-16M"]}})
    _write(results / "default_1024" / "search" / "configs" / "flops-16M.yaml", "channels: {conv1: 8}\n")
    _write(results / "default_1024" / "retrain" / "flops-16M" / "seed0.json",
           dict(_summary(0.74, 15_000_000, 60_000), channels={"conv1": 8}, seed=0))
    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (results / "default_1024.csv").read_text().splitlines()[1] == "16M,15000000,60000,1,74.0,0.0,72.5,1.5"
    _write(results / "default_1024" / "retrain" / "flops-16M" / "seed1.json",
           dict(_summary(0.74, 15_000_000, 60_000), channels={"conv1": 16}, seed=1))
    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results)], capture_output=True, text=True)
    assert done.returncode != 0 and "seeds [1] trained other channels" in done.stderr


def test_a_supernet_searched_only_by_variants_goes_beside_them(tmp_path):
    import torch

    from autoslim.checkpoint import FORMAT, load_checkpoint

    runs, results = tmp_path / "runs", tmp_path / "results"
    for seed in (0, 1):
        _write(runs / "retrain" / "flops-20M" / f"seed{seed}" / "summary.json",
               _summary(0.77, 20_000_000, 50_000, baseline=_summary(0.70, 10_000_000, 100_000, width=0.5)))
    # the committed supernet (main search) and a finished rerun in RUNS that only the variants searched
    header = "step,epoch,kind,largest_accuracy,smallest_accuracy\n"
    _write(results / "supernet" / "metrics.csv", header + "10,1,eval,0.5,0.4\n20,2,eval,0.6,0.5\n")
    _write(runs / "supernet" / "summary.json", {"finished": True})
    _write(runs / "supernet" / "metrics.csv", header + "5,0.5,train,,\n10,1,eval,0.55,0.45\n20,2,eval,0.65,0.52\n")
    _write(runs / "supernet" / "run.yaml", "epochs: 2\n")
    torch.save({"format": FORMAT, "model": {"w": torch.ones(3)}, "optimizer": {"state": {}}, "scheduler": {},
                "rng": {}, "finished": True}, runs / "supernet" / "checkpoint.pt")
    search = runs / "variants" / "drop-per-mac" / "search"
    _write(search / "summary.json", {"targets": {"flops-20M": {"config": "configs/flops-20M.yaml", "step": 2,
                                                                "macs": 19_000_000, "params": 40_000, "accuracy": 0.6}}})
    _write(search / "trajectory.csv", "step,unit,macs,params\n0,,30000000,90000\n1,conv1,25000000,80000\n"
                                      "2,layer3.0,19000000,40000\n")
    _write(search / "configs" / "flops-20M.yaml", "channels: {conv1: 8}\n")
    for name in ("pareto.png", "run.yaml"):
        _write(search / name, "x\n")
    # the variant's config retrained on one seed, and a second uniform network (30M MACs, 300k params) for a line
    _write(runs / "variants" / "drop-per-mac" / "retrain" / "flops-20M" / "seed0" / "summary.json",
           _summary(0.78, 19_000_000, 40_000))
    _write(runs / "bracket" / "uniform-0.9x" / "seed0" / "summary.json", _summary(0.80, 30_000_000, 300_000, width=0.9))
    # the one-cycle supernet, one epoch into its run: its curve is copied unfinished, its summary is not
    _write(runs / "schedule" / "one-cycle" / "metrics.csv", header + "5,0.5,train,,\n10,1,eval,0.58,0.41\n")
    _write(runs / "schedule" / "one-cycle" / "summary.json", {"finished": False})

    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    assert [(r["epoch"], r["one_cycle_largest"], r["one_cycle_smallest"], r["cosine_main_largest"],
             r["cosine_variants_smallest"]) for r in _rows(results / "schedule.csv")] == [("1", "58.0", "41.0", "50.0", "45.0")]
    assert (results / "schedule" / "one-cycle" / "metrics.csv").is_file()
    assert not (results / "schedule" / "one-cycle" / "summary.json").exists()
    assert "| 1 | 58.00 / 41.00 | 50.00 / 40.00 | 55.00 / 45.00 |" in (results / "table.md").read_text()
    assert (results / "supernet" / "metrics.csv").read_text().endswith("0.6,0.5\n")  # the main one, untouched
    rerun = results / "variants" / "supernet"
    assert (rerun / "metrics.csv").read_text() == (runs / "supernet" / "metrics.csv").read_text()
    state = load_checkpoint(rerun / "checkpoint.pt")
    assert state["weights_only"] and "optimizer" not in state and torch.equal(state["model"]["w"], torch.ones(3))
    assert [(r["epoch"], r["main_largest"], r["variants_largest"]) for r in _rows(results / "supernets.csv")] == \
        [("1", "50.0", "55.0"), ("2", "60.0", "65.0")]
    (variant,) = _rows(results / "variants.csv")
    assert (variant["variant"], variant["budget"], variant["seeds"]) == ("drop-per-mac", "flops-20M", "1")
    # by MACs: 70% at 10M to 80% at 30M gives 74.5% at 19M; by params 40k lies below the narrowest network (100k)
    assert (float(variant["uniform_at_macs"]), float(variant["diff_macs"])) == (74.5, 3.5)
    assert (variant["params_bound"], float(variant["uniform_at_params"]), float(variant["diff_params"])) == ("<=", 70.0, 8.0)
    stages = {r["stage"]: r for r in _rows(results / "variants" / "drop-per-mac" / "stages.csv")}
    assert stages["layer3"]["macs_saved"] == "6000000" and stages["conv1"]["params_saved"] == "10000"
    assert not (results / "search").exists()  # no main search in RUNS: nothing copied there


def _markdown_tables(text: str) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """Every markdown table in `text`: its header line and its data rows, cells stripped and bold removed."""
    tables, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if index + 1 < len(lines) and line.startswith("|") and lines[index + 1].startswith("|---"):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            tables.append((_cells(line), [_cells(row) for row in rows]))
    return tables


def _cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip().replace("**", "").removeprefix("flops-") for cell in line.strip().strip("|").split("|"))


def test_the_results_readme_copies_its_tables_from_table_md():
    # the README's tables are typed beside prose; each one with the header of a table that make_table.py writes must
    # hold only rows of that table, so a figure changed in one place and not the other fails here
    folder = SCRIPT.parent
    generated: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for header, rows in _markdown_tables((folder / "table.md").read_text()):
        generated.setdefault(header, set()).update(rows)
    checked = 0
    for header, rows in _markdown_tables((folder / "README.md").read_text()):
        if header in generated:
            missing = [row for row in rows if row not in generated[header]]
            assert not missing, f"README rows not in table.md under {header}: {missing}"
            checked += len(rows)
    assert checked >= 20  # the retraining, line, proxy, stage and variant tables at least


def test_every_accuracy_quoted_in_the_readmes_is_a_measured_one():
    # prose quotes retrained accuracies as "mean ± sd"; each must be a figure of table.md, in the results README, and
    # of some results folder's table.md in the top-level one, so a rerun that moves a mean leaves no stale copy behind
    folder = SCRIPT.parent

    def figures(path):
        return set(re.findall(r"\d+\.\d+ ± \d+\.\d+", path.read_text()))

    every_table = set().union(*(figures(table) for table in folder.parent.glob("*/table.md")))
    for readme, measured, at_least in ((folder / "README.md", figures(folder / "table.md"), 10),
                                       (folder.parents[1] / "README.md", every_table, 0)):
        quoted = figures(readme)
        assert len(quoted) >= at_least, readme  # the results README: the retrained networks at least
        assert quoted <= measured, f"{readme.name}: not in a table.md: {sorted(quoted - measured)}"
