"""Collect the figures of reproduce.sh into results/cifar10_resnet20_latency. Usage:
python make_table.py RUNS RESULTS [SCRATCH]   (SCRATCH: the uniform networks' results, default results/cifar10_resnet20)

Copies the small files of RUNS into RESULTS: search/ (summary.json, trajectory.csv, pareto.csv, run.yaml, configs/),
the latency model's description (latency_model.json), check.txt (the held-out timing), latency.csv (every network
timed side by side) and retrain/NAME/seedN.json of every finished retraining. Then writes, from RESULTS alone,
table.csv and table.md: every pick retrained (accuracy mean ± sample sd over seeds) beside the uniform networks
retrained in results/cifar10_resnet20, every network with its latency from latency.csv, and the uniform line at the
pick's latency (linear between the two retrained uniform networks around it) with the difference.
"""

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

runs, results = Path(sys.argv[1]), Path(sys.argv[2])
SCRATCH = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[1] / "cifar10_resnet20"


def read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def copy(source: Path, target: Path) -> None:
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


for name in ("summary.json", "trajectory.csv", "pareto.csv", "run.yaml"):
    copy(runs / "search" / name, results / "search" / name)
for config in sorted((runs / "search" / "configs").glob("*.yaml")):
    copy(config, results / "search" / "configs" / config.name)
for model in sorted((runs / "supernet" / "latency").glob("*.json")):
    copy(model, results / "latency_model.json")
copy(runs / "check.txt", results / "check.txt")
copy(runs / "latency.csv", results / "latency.csv")
for summary in sorted(runs.glob("retrain/*/seed*/summary.json")):
    if (read(summary) or {}).get("finished"):
        copy(summary, results / "retrain" / summary.parent.parent.name / f"{summary.parent.name}.json")

# -- the table, from RESULTS alone ------------------------------------------------------------------------------------

latency = {row["name"]: row for row in csv.DictReader(open(results / "latency.csv"))} \
    if (results / "latency.csv").is_file() else {}


def accuracies(paths) -> list[float]:
    return [100 * read(p)["accuracy"] for p in paths]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


uniform = {}  # width -> accuracies of the retrained uniform network, from results/cifar10_resnet20
for path in sorted(SCRATCH.glob("retrain/flops-*/seed*.json")):
    baseline = read(path)["baseline"]
    uniform.setdefault(baseline["width"], []).append(100 * baseline["accuracy"])
for path in sorted(SCRATCH.glob("bracket/uniform-*x/seed*.json")):
    uniform.setdefault(float(path.parent.name[8:-1]), []).append(100 * read(path)["accuracy"])
points = sorted((float(latency[f"uniform {w}x"]["latency_ms"]), statistics.mean(a), w)
                for w, a in uniform.items() if f"uniform {w}x" in latency)


def line_at(ms: float):
    """The uniform line's accuracy at ``ms`` (None outside the retrained uniform networks' range)."""
    for (x0, y0, _), (x1, y1, _) in zip(points, points[1:]):
        if x0 <= ms <= x1:
            return y0 + (y1 - y0) * (ms - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)
    return None


rows = []
search = read(results / "search" / "summary.json") or {}
for label, target in sorted(search.get("targets", {}).items()):
    seeds = sorted((results / "retrain" / label).glob("seed*.json"))
    if not seeds or label not in latency:
        continue
    acc_mean, acc_sd = mean_sd(accuracies(seeds))
    ms = float(latency[label]["latency_ms"])
    line = line_at(ms)
    rows.append({"network": label, "macs": target["macs"], "params": target["params"],
                 "predicted_ms": round(target["latency"]["predicted_ms"], 4), "latency_ms": ms, "seeds": len(seeds),
                 "acc_mean": round(acc_mean, 2), "acc_sd": round(acc_sd, 2),
                 "uniform_at_latency": None if line is None else round(line, 2),
                 "diff_latency": None if line is None else round(acc_mean - line, 2)})
for ms, _, width in points:
    acc_mean, acc_sd = mean_sd(uniform[width])
    row = latency[f"uniform {width}x"]
    rows.append({"network": f"uniform {width}x", "macs": int(row["macs"]), "params": int(row["params"]),
                 "predicted_ms": None, "latency_ms": ms, "seeds": len(uniform[width]), "acc_mean": round(acc_mean, 2),
                 "acc_sd": round(acc_sd, 2), "uniform_at_latency": None, "diff_latency": None})
if rows:
    with open(results / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| network | MACs | params | latency ms (predicted) | seeds | accuracy % (mean ± sd) | uniform line at "
             "its latency | difference |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        predicted = f" ({r['predicted_ms']:.3f})" if r["predicted_ms"] is not None else ""
        line = "" if r["uniform_at_latency"] is None else f"{r['uniform_at_latency']:.2f}"
        diff = "" if r["diff_latency"] is None else f"{r['diff_latency']:+.2f}"
        lines.append(f"| {r['network']} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e3:.1f}k | {r['latency_ms']:.3f}"
                     f"{predicted} | {r['seeds']} | {r['acc_mean']:.2f} ± {r['acc_sd']:.2f} | {line} | {diff} |")
    (results / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
