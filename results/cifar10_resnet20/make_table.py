"""Collect the figures of reproduce.sh into results/cifar10_resnet20 (table.csv, table.md, copies of the
small output files). Usage: python make_table.py RUNS RESULTS."""

import json
import shutil
import statistics
import sys
from pathlib import Path

runs, results = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("supernet/summary.json", "supernet/metrics.csv", "supernet/run.yaml", "search/summary.json",
             "search/trajectory.csv", "search/pareto.csv", "search/pareto.png", "search/run.yaml"):
    source = runs / name
    if source.exists():
        target = results / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
for config in sorted((runs / "search" / "configs").glob("*.yaml")):
    (results / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, results / "configs" / config.name)

rows = []
for budget_dir in sorted((runs / "retrain").glob("flops-*")):
    searched, uniform = [], []
    for seed_dir in sorted(budget_dir.glob("seed*")):
        summary_path = seed_dir / "summary.json"
        if not summary_path.exists():
            continue
        summary = json.loads(summary_path.read_text())
        if not summary.get("finished") or not (summary.get("baseline") or {}).get("finished"):
            continue
        target = results / "retrain" / budget_dir.name / f"{seed_dir.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary_path, target)
        searched.append(summary)
        uniform.append(summary["baseline"])
    if not searched:
        continue

    def stats(values):
        accuracies = [v["accuracy"] * 100 for v in values]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        return statistics.mean(accuracies), spread

    (mean_s, sd_s), (mean_u, sd_u) = stats(searched), stats(uniform)
    rows.append({"budget": budget_dir.name, "seeds": len(searched), "epochs": searched[0]["epochs"],
                 "autoslim_macs": searched[0]["macs"], "autoslim_params": searched[0]["params"],
                 "autoslim_acc_mean": round(mean_s, 2), "autoslim_acc_std": round(sd_s, 2),
                 "uniform_width": uniform[0].get("width"), "uniform_macs": uniform[0]["macs"],
                 "uniform_params": uniform[0]["params"], "uniform_acc_mean": round(mean_u, 2),
                 "uniform_acc_std": round(sd_u, 2),
                 "autoslim_seconds": round(statistics.mean(v["seconds"] for v in searched)),
                 "uniform_seconds": round(statistics.mean(v["seconds"] for v in uniform))})

if rows:
    columns = list(rows[0])
    (results / "table.csv").write_text(",".join(columns) + "\n" + "\n".join(",".join(str(r[c]) for c in columns)
                                                                           for r in rows) + "\n")
    lines = ["| budget | seeds | AutoSlim MACs | params | accuracy % (mean ± sd) | uniform | MACs | params | accuracy % (mean ± sd) | train s (AutoSlim / uniform) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget']} | {r['seeds']} | {r['autoslim_macs'] / 1e6:.2f}M | {r['autoslim_params'] / 1e3:.1f}k | "
                     f"{r['autoslim_acc_mean']:.2f} ± {r['autoslim_acc_std']:.2f} | {r['uniform_width']}x | "
                     f"{r['uniform_macs'] / 1e6:.2f}M | {r['uniform_params'] / 1e3:.1f}k | "
                     f"{r['uniform_acc_mean']:.2f} ± {r['uniform_acc_std']:.2f} | "
                     f"{r['autoslim_seconds']:,} / {r['uniform_seconds']:,} |")
    (results / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
else:
    print("no finished retrainings yet")
