"""Collect the figures of reproduce.sh into results/cifar10_resnet20_finetune. Usage:
python make_table.py RUNS RESULTS [SCRATCH]   (SCRATCH: the from-scratch results, default results/cifar10_resnet20)

Copies the small files of every finished run of RUNS into RESULTS, beside those collected from earlier RUNS folders:
base/seedN.json (+ base/metrics.csv), supernet/ (summary.json, metrics.csv, run.yaml), search/ (summary.json,
trajectory.csv, run.yaml, configs/), finetune/flops-B/seedN.json (the pick), uniform/flops-B/seedN.json (its
uniform baseline), torchpruning/IMPORTANCE/flops-B/seedN.json, and wall.csv (reproduce.sh's log of wall times).
Where RUNS/paused.csv (run,seconds,why) names a run by its folder under RUNS (base/seed0, supernet,
finetune/flops-20M/seed1, ...), that many seconds were spent with the run stopped (SIGSTOP, so that latency timings
had the machine to themselves): its copied summary gets them as paused_seconds and its seconds (and wall_seconds)
without them, and paused.csv is copied too.

Then writes, from RESULTS alone, table.csv and table.md: per budget, every method's MACs, params, test accuracy
(mean ± sample sd over seeds), the start's accuracy (the network before fine-tuning), its own run time (mean
seconds per seed: training, and for Torch-Pruning the pruning too), the shared cost it needs first (the base
network, the supernet, the search: paid once for every budget) and the sum of the two. The from-scratch rows come
from the committed seed summaries of SCRATCH: the pick of its default search (else its first search) retrained
from scratch, the widest uniform network within the budget retrained from scratch, and the uniform line at that
pick's MACs (default.csv / line.csv). shared.csv lists the shared costs.
"""

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

from autoslim.budget import parse_budget

runs, results = Path(sys.argv[1]), Path(sys.argv[2])
scratch = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[1] / "cifar10_resnet20"
IMPORTANCES = {"magnitude": "Torch-Pruning, magnitude (L1), fine-tuned", "taylor": "Torch-Pruning, Taylor, fine-tuned"}


def read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def finished(path: Path) -> bool:
    summary = read(path)
    return bool(summary and summary.get("finished"))


def copy(source: Path, target: Path) -> None:
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def read_paused(path: Path) -> dict:
    """run folder -> seconds it spent stopped, summed over the rows of paused.csv naming it."""
    paused = {}
    if path.is_file():
        with open(path) as stream:
            for r in csv.DictReader(stream):
                run = r["run"].strip("/")
                paused[run] = paused.get(run, 0.0) + float(r["seconds"])
    return paused


PAUSED = read_paused(runs / "paused.csv")


def copy_summary(source: Path, target: Path) -> None:
    """Copy a run's summary.json, less the seconds paused.csv says the run spent stopped."""
    run = source.parent.relative_to(runs).as_posix()
    if run not in PAUSED:
        return copy(source, target)
    summary = read(source)
    summary["paused_seconds"] = round(PAUSED[run], 2)
    for holder, key in ((summary, "seconds"), (summary, "wall_seconds"), (summary.get("work") or {}, "seconds")):
        if holder.get(key) is not None:  # a search's time is its work's seconds
            holder[key] = round(holder[key] - PAUSED[run], 2)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary, indent=2) + "\n")


# -- collecting: only finished runs replace collected figures --------------------------------------------------------

for run_dir in sorted(runs.glob("base/seed*")):
    if finished(run_dir / "summary.json"):
        copy_summary(run_dir / "summary.json", results / "base" / f"{run_dir.name}.json")
        copy(run_dir / "metrics.csv", results / "base" / f"{run_dir.name}-metrics.csv")
copy(runs / "base" / "uniform-1.0x.yaml", results / "base" / "uniform-1.0x.yaml")
if finished(runs / "supernet" / "summary.json"):
    copy_summary(runs / "supernet" / "summary.json", results / "supernet" / "summary.json")
    for name in ("metrics.csv", "run.yaml"):
        copy(runs / "supernet" / name, results / "supernet" / name)
if (runs / "search" / "summary.json").is_file():  # a search writes its summary last
    copy_summary(runs / "search" / "summary.json", results / "search" / "summary.json")
    for name in ("trajectory.csv", "run.yaml"):
        copy(runs / "search" / name, results / "search" / name)
    for config in sorted((runs / "search" / "configs").glob("*.yaml")):
        copy(config, results / "search" / "configs" / config.name)
for budget_dir in sorted(runs.glob("finetune/flops-*")):
    for seed_dir in sorted(budget_dir.glob("seed*")):
        if finished(seed_dir / "summary.json"):
            copy_summary(seed_dir / "summary.json", results / "finetune" / budget_dir.name / f"{seed_dir.name}.json")
        if finished(seed_dir / "uniform" / "summary.json"):
            copy_summary(seed_dir / "uniform" / "summary.json", results / "uniform" / budget_dir.name / f"{seed_dir.name}.json")
for seed_dir in sorted(runs.glob("torchpruning/*/flops-*/seed*")):
    if finished(seed_dir / "summary.json"):
        importance, budget = seed_dir.parent.parent.name, seed_dir.parent.name
        copy_summary(seed_dir / "summary.json", results / "torchpruning" / importance / budget / f"{seed_dir.name}.json")
copy(runs / "wall.csv", results / "wall.csv")
copy(runs / "paused.csv", results / "paused.csv")


# -- the shared costs ------------------------------------------------------------------------------------------------

def seconds_of(summary, key="seconds"):
    return None if summary is None else summary.get(key)


bases = [read(p) for p in sorted((results / "base").glob("seed*.json"))]
base = bases[0] if bases else None
supernet = read(results / "supernet" / "summary.json")
search = read(results / "search" / "summary.json")
scratch_supernets = {"default": read(scratch / "variants" / "supernet" / "summary.json"),
                     "first": read(scratch / "supernet" / "summary.json")}
scratch_searches = {"default": read(scratch / "default" / "search" / "summary.json"),
                    "first": read(scratch / "search" / "summary.json")}
shared = {
    "base": ("the 1.0x ResNet-20 trained from scratch (base)", base, seconds_of(base)),
    "supernet": ("the supernet fine-tuned from it (supernet)", supernet, seconds_of(supernet)),
    "search": ("the search of that supernet (search)", search, seconds_of((search or {}).get("work"))),
    "scratch-supernet-default": ("the from-scratch supernet of the default search (results/cifar10_resnet20)",
                                 scratch_supernets["default"], seconds_of(scratch_supernets["default"])),
    "scratch-search-default": ("its default search", scratch_searches["default"],
                               seconds_of((scratch_searches["default"] or {}).get("work"))),
    "scratch-supernet-first": ("the from-scratch supernet of the first search (results/cifar10_resnet20)",
                               scratch_supernets["first"], seconds_of(scratch_supernets["first"])),
    "scratch-search-first": ("its first search", scratch_searches["first"],
                             seconds_of((scratch_searches["first"] or {}).get("work"))),
}


def shared_seconds(keys):
    values = [shared[key][2] for key in keys]
    return None if any(v is None for v in values) else round(sum(values))


def percent(value):
    return None if value is None else round(value * 100, 2)


def mean(values):
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 2) if values else None


# -- the rows --------------------------------------------------------------------------------------------------------

def row(budget, method, label, summaries, *, shared_keys=(), run_seconds="seconds", start="init_accuracy"):
    """One method at one budget from its seed summaries (none: a row of its label alone, not run yet)."""
    accuracies = [s["accuracy"] * 100 for s in summaries]
    first = summaries[0] if summaries else {}
    run = mean([s.get(run_seconds) for s in summaries]) if summaries else None
    share = shared_seconds(shared_keys)
    return {"budget": budget, "method": method, "network": label, "seeds": len(summaries),
            "epochs": first.get("epochs"), "macs": first.get("macs"), "params": first.get("params"),
            "start_acc": mean([percent(s.get(start)) for s in summaries]) if start else None,
            "acc_mean": round(statistics.mean(accuracies), 2) if accuracies else None,
            "acc_std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
            "run_seconds": None if run is None else round(run), "shared": "+".join(shared_keys),
            "shared_seconds": share,
            "total_seconds": None if run is None or share is None else round(run + share)}


def seeds(directory: Path):
    return [read(p) for p in sorted(directory.glob("seed*.json"))]


def scratch_uniform_networks():
    """Every uniform network retrained from scratch in SCRATCH (the baselines and the bracket), by width."""
    networks = {}
    for path in sorted(scratch.glob("retrain/flops-*/seed*.json")):
        baseline = read(path).get("baseline")
        if baseline:
            networks.setdefault(baseline["width"], {})[path.stem] = baseline
    for path in sorted(scratch.glob("bracket/uniform-*x/seed*.json")):
        summary = read(path)
        networks.setdefault(summary["width"], {})[path.stem] = summary
    return {width: list(by_seed.values()) for width, by_seed in networks.items()}


def scratch_line(budget):
    """(MACs, accuracy) of the uniform line at the from-scratch pick's MACs: default.csv, else line.csv."""
    for name, key in (("default.csv", budget), ("line.csv", f"flops-{budget}")):
        if (scratch / name).is_file():
            with open(scratch / name) as stream:
                for line in csv.DictReader(stream):
                    if line["budget"] == key:
                        return int(line["macs"]), float(line["uniform_at_macs"])
    return None


budgets = sorted({p.name[len("flops-"):] for p in results.glob("*/flops-*")} |
                 {p.name[len("flops-"):] for p in results.glob("torchpruning/*/flops-*")} |
                 {key[len("flops-"):] for key in (search or {}).get("targets", {})},
                 key=parse_budget, reverse=True)
uniform_scratch = scratch_uniform_networks()
rows = []
for budget in budgets:
    name = f"flops-{budget}"
    rows.append(row(budget, "autoslim-finetune", "AutoSlim pick, fine-tuned from the supernet",
                    seeds(results / "finetune" / name), shared_keys=("base", "supernet", "search")))
    uniform = seeds(results / "uniform" / name)
    width = f" {uniform[0]['width']:g}x" if uniform else ""
    rows.append(row(budget, "uniform-finetune", f"uniform{width}, sliced from the same supernet, fine-tuned", uniform,
                    shared_keys=("base", "supernet")))
    for importance, label in IMPORTANCES.items():
        rows.append(row(budget, f"tp-{importance}", label, seeds(results / "torchpruning" / importance / name),
                        shared_keys=("base",), run_seconds="wall_seconds"))
    picks = seeds(scratch / "default" / "retrain" / name)
    which = "default"
    if not picks:  # the default search's pick of this budget is not retrained: its first search's
        picks = [{k: v for k, v in s.items() if k != "baseline"} for s in seeds(scratch / "retrain" / name)]
        which = "first"
    if picks:
        rows.append(row(budget, "autoslim-scratch", f"AutoSlim pick ({which} search), from scratch", picks,
                        shared_keys=(f"scratch-supernet-{which}", f"scratch-search-{which}"), start=None))
    within = [w for w, summaries in uniform_scratch.items() if summaries[0]["macs"] <= parse_budget(budget)]
    if within:
        widest = max(within)
        rows.append(row(budget, "uniform-scratch", f"uniform {widest:g}x, from scratch", uniform_scratch[widest],
                        start=None))
    line = scratch_line(budget)
    if line:
        rows.append({"budget": budget, "method": "uniform-line-scratch", "network":
                     "uniform line at that pick's MACs, from scratch (interpolated)", "seeds": None, "epochs": None,
                     "macs": line[0], "params": None, "start_acc": None, "acc_mean": line[1], "acc_std": None,
                     "run_seconds": None, "shared": "", "shared_seconds": None, "total_seconds": None})

results.mkdir(parents=True, exist_ok=True)


def cell(value, fmt="{}"):
    return "" if value is None else fmt.format(value)


def write_csv(path: Path, table: list) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: cell(value) for key, value in r.items()} for r in table)


if not rows:
    print("no budgets yet: run the search stage first")
    sys.exit(0)
write_csv(results / "table.csv", rows)
shared_rows = [{"cost": key, "what": what, "epochs": (summary or {}).get("epochs"), "seconds": cell(seconds, "{:.0f}"),
                "accuracy": percent((summary or {}).get("accuracy") or (summary or {}).get("largest_accuracy"))}
               for key, (what, summary, seconds) in shared.items()]
write_csv(results / "shared.csv", shared_rows)


def accuracy(r):
    if r["acc_mean"] is None:
        return "not run yet"
    return f"{r['acc_mean']:.2f}" if r["acc_std"] is None else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"


lines = ["| budget | network | seeds | epochs | MACs | params | start % | accuracy % (mean ± sd) | own s | shared s | "
         "total s |", "|" + "---|" * 11]
for r in rows:
    lines.append("| " + " | ".join([
        r["budget"], r["network"], cell(r["seeds"]) if r["acc_mean"] is not None and r["seeds"] else "",
        cell(r["epochs"]), cell(r["macs"] and r["macs"] / 1e6, "{:.2f}M"),
        cell(r["params"] and r["params"] / 1e3, "{:.1f}k"),
        cell(r["start_acc"], "{:.2f}"), accuracy(r), cell(r["run_seconds"], "{:,}"),
        cell(r["shared_seconds"], "{:,}") if r["shared"] else ("0" if r["run_seconds"] is not None else ""),
        cell(r["total_seconds"], "{:,}") if r["shared"] else cell(r["run_seconds"], "{:,}")]) + " |")
lines += ["", "own s: the mean seconds of one seed's run (training; Torch-Pruning's pruning included). shared s: what "
          "the method needs first, paid once for every budget (see below). start %: the test accuracy before "
          "fine-tuning (the slice of the supernet, or the pruned network, BatchNorm recalibrated).", "",
          "| shared cost | epochs | seconds | test accuracy % |", "|---|---|---|---|"]
lines += [f"| {r['what']} | {cell(r['epochs'])} | {cell(r['seconds'] and int(r['seconds']), '{:,}') or 'not run yet'} | "
          f"{cell(r['accuracy'], '{:.2f}')} |"
          for r in shared_rows]
lines += ["", "A single seed's accuracy is shown without a spread. The from-scratch rows are the committed figures of "
          f"{scratch.name} (their own epochs, on the same kind of machine but not in the same session)."]
(results / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
