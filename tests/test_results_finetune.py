"""results/cifar10_resnet20_finetune/make_table.py on made-up run summaries: every method at every budget, the
from-scratch rows, the shared costs, and what is not run yet."""

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "cifar10_resnet20_finetune" / "make_table.py"


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _run(accuracy, macs, params, seconds, **extra):
    return {"accuracy": accuracy, "macs": macs, "params": params, "seconds": seconds, "epochs": 10, "finished": True,
            **extra}


def _made_up(tmp_path):
    runs, scratch = tmp_path / "runs", tmp_path / "scratch"
    _write(runs / "base" / "seed0" / "summary.json", _run(0.90, 40_813_184, 272_474, 2400, epochs=30))
    _write(runs / "supernet" / "summary.json", {"finished": True, "epochs": 10, "seconds": 2800, "largest_accuracy": 0.89})
    _write(runs / "search" / "summary.json", {"targets": {"flops-20M": {}, "flops-10M": {}}, "work": {"seconds": 900}})
    _write(runs / "search" / "configs" / "flops-20M.yaml", "channels: {conv1: 16}\n")
    for seed, (pick, start, uniform) in enumerate([(0.85, 0.70, 0.83), (0.87, 0.72, 0.83)]):
        run = runs / "finetune" / "flops-20M" / f"seed{seed}"
        _write(run / "summary.json", _run(pick, 19_000_000, 100_000, 300 + 10 * seed, init_accuracy=start))
        _write(run / "uniform" / "summary.json", _run(uniform, 15_000_000, 90_000, 280, width=0.62, init_accuracy=0.6))
        _write(runs / "torchpruning" / "magnitude" / "flops-20M" / f"seed{seed}" / "summary.json",
               _run(0.84 + 0.02 * seed, 18_900_000, 120_000, 300, wall_seconds=400 + 20 * seed, init_accuracy=0.5))
    _write(runs / "finetune" / "flops-10M" / "seed0" / "summary.json",
           _run(0.80, 9_800_000, 50_000, 200, init_accuracy=0.6))
    _write(runs / "torchpruning" / "taylor" / "flops-20M" / "seed0" / "summary.json", {"finished": False})
    _write(runs / "wall.csv", "run,seconds,status\nbase,2410.5,0\n")
    # the from-scratch results: the default search's 20M pick, the first search's 10M pick, uniform networks
    for seed, accuracy in enumerate([0.82, 0.83]):
        _write(scratch / "default" / "retrain" / "flops-20M" / f"seed{seed}.json",
               _run(accuracy, 18_370_960, 109_786, 3000, epochs=15))
    _write(scratch / "retrain" / "flops-10M" / "seed0.json", _run(0.77, 6_738_160, 30_082, 800, epochs=15, baseline=_run(
        0.75, 5_480_608, 20_610, 700, epochs=15, width=0.27)))
    _write(scratch / "retrain" / "flops-20M" / "seed0.json", _run(0.80, 18_985_200, 58_178, 1900, epochs=15, baseline=_run(
        0.798, 10_314_048, 68_786, 830, epochs=15, width=0.55)))
    _write(scratch / "bracket" / "uniform-0.41x" / "seed0.json", _run(0.79, 8_941_808, 47_154, 1900, epochs=15, width=0.41))
    _write(scratch / "bracket" / "uniform-0.69x" / "seed0.json", _run(0.83, 29_589_984, 160_938, 3190, epochs=15, width=0.69))
    _write(scratch / "variants" / "supernet" / "summary.json", {"epochs": 10, "seconds": 6000, "finished": True})
    _write(scratch / "default" / "search" / "summary.json", {"work": {"seconds": 2000}})
    _write(scratch / "supernet" / "summary.json", {"epochs": 10, "seconds": 9000, "finished": True})
    _write(scratch / "search" / "summary.json", {"work": {"seconds": 1900}})
    _write(scratch / "default.csv", "budget,macs,params,seeds,acc_mean,acc_sd,uniform_at_macs,diff_macs\n"
                                    "20M,18370960,109786,2,82.5,0.71,81.35,1.15\n")
    _write(scratch / "line.csv", "budget,macs,params,acc_mean,uniform_at_macs,macs_bound,diff_macs,uniform_at_params,"
                                 "params_bound,diff_params\nflops-10M,6738160,30082,77.0,76.27,,0.73,76.24,,0.76\n")
    return runs, scratch


def test_the_table_sets_every_method_beside_the_from_scratch_ones(tmp_path):
    runs, scratch = _made_up(tmp_path)
    results = tmp_path / "results"

    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results), str(scratch)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr

    with open(results / "table.csv") as stream:
        rows = {(r["budget"], r["method"]): r for r in csv.DictReader(stream)}
    assert [key for key in rows if key[0] == "20M"] == [
        ("20M", m) for m in ("autoslim-finetune", "uniform-finetune", "tp-magnitude", "tp-taylor", "autoslim-scratch",
                             "uniform-scratch", "uniform-line-scratch")]
    pick = rows["20M", "autoslim-finetune"]
    # mean and sample sd of 85 and 87; the start's mean; 305 s per seed after 2400 + 2800 + 900 s shared
    assert (pick["seeds"], float(pick["acc_mean"]), float(pick["acc_std"]), float(pick["start_acc"])) == ("2", 86.0, 1.41, 71.0)
    assert (pick["run_seconds"], pick["shared_seconds"], pick["total_seconds"]) == ("305", "6100", "6405")
    uniform = rows["20M", "uniform-finetune"]
    assert "0.62x" in uniform["network"] and (float(uniform["acc_mean"]), uniform["shared_seconds"]) == (83.0, "5200")
    magnitude = rows["20M", "tp-magnitude"]  # pruning and fine-tuning: wall_seconds
    assert (float(magnitude["acc_mean"]), magnitude["run_seconds"], magnitude["shared_seconds"]) == (85.0, "410", "2400")
    assert rows["20M", "tp-taylor"]["acc_mean"] == ""  # unfinished: not collected
    scratch_pick = rows["20M", "autoslim-scratch"]
    assert "default search" in scratch_pick["network"] and float(scratch_pick["acc_mean"]) == 82.5
    assert (scratch_pick["epochs"], scratch_pick["total_seconds"]) == ("15", str(3000 + 6000 + 2000))
    # the widest uniform network within 20M retrained from scratch: 0.55x (0.69x has 29.6M MACs)
    assert "0.55x" in rows["20M", "uniform-scratch"]["network"]
    assert float(rows["20M", "uniform-line-scratch"]["acc_mean"]) == 81.35
    # 10M: the default search's pick is not retrained, the first search's is; no uniform fine-tune yet
    assert "first search" in rows["10M", "autoslim-scratch"]["network"]
    assert rows["10M", "autoslim-scratch"]["shared_seconds"] == str(9000 + 1900)
    assert "0.41x" in rows["10M", "uniform-scratch"]["network"]
    assert float(rows["10M", "uniform-line-scratch"]["acc_mean"]) == 76.27
    assert rows["10M", "uniform-finetune"]["acc_mean"] == ""
    assert rows["10M", "autoslim-finetune"]["acc_std"] == ""  # one seed: no spread

    table = (results / "table.md").read_text()
    assert "| 20M | AutoSlim pick, fine-tuned from the supernet | 2 | 10 | 19.00M | 100.0k | 71.00 | 86.00 ± 1.41 | " \
           "305 | 6,100 | 6,405 |" in table
    assert "| 20M | Torch-Pruning, Taylor, fine-tuned |  |  |  |  |  | not run yet |  | 2,400 |  |" in table
    assert "| 10M | AutoSlim pick, fine-tuned from the supernet | 1 | 10 | 9.80M | 50.0k | 60.00 | 80.00 | 200 |" in table
    with open(results / "shared.csv") as stream:
        shared = {r["cost"]: r for r in csv.DictReader(stream)}
    assert (shared["base"]["seconds"], shared["base"]["accuracy"]) == ("2400", "90.0")
    assert (shared["search"]["seconds"], shared["scratch-search-default"]["seconds"]) == ("900", "2000")
    for name in ("base/seed0.json", "supernet/summary.json", "search/configs/flops-20M.yaml", "finetune/flops-20M/seed1.json",
                 "uniform/flops-20M/seed0.json", "torchpruning/magnitude/flops-20M/seed1.json", "wall.csv"):
        assert (results / name).is_file(), name
    assert not (results / "torchpruning" / "taylor").exists()


def test_seconds_a_run_spent_stopped_are_taken_out_of_its_time(tmp_path):
    runs, scratch = _made_up(tmp_path)
    _write(runs / "paused.csv", "run,seconds,why\nbase/seed0,300,timings\nbase/seed0,100,timings\n"
                                "finetune/flops-20M/seed1,10,timings\ntorchpruning/magnitude/flops-20M/seed0/,20,x\n"
                                "search,50,timings\n")
    results = tmp_path / "results"

    done = subprocess.run([sys.executable, str(SCRIPT), str(runs), str(results), str(scratch)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr

    base = json.loads((results / "base" / "seed0.json").read_text())
    assert (base["seconds"], base["paused_seconds"]) == (2000, 400)  # 2400 less both pauses
    magnitude = json.loads((results / "torchpruning" / "magnitude" / "flops-20M" / "seed0.json").read_text())
    assert (magnitude["seconds"], magnitude["wall_seconds"]) == (280, 380)
    assert json.loads((results / "search" / "summary.json").read_text())["work"]["seconds"] == 850
    assert "paused_seconds" not in json.loads((results / "finetune" / "flops-20M" / "seed0.json").read_text())
    with open(results / "table.csv") as stream:
        rows = {(r["budget"], r["method"]): r for r in csv.DictReader(stream)}
    # seeds 300 and 310 - 10; shared 2000 + 2800 + 850
    assert (rows["20M", "autoslim-finetune"]["run_seconds"], rows["20M", "autoslim-finetune"]["shared_seconds"]) == (
        "300", "5650")
    assert (results / "paused.csv").is_file()
