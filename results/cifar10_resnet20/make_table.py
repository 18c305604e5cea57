"""Collect the figures of reproduce.sh into results/cifar10_resnet20. Usage: python make_table.py RUNS RESULTS.

Writes table.md (every table below, as markdown) and table.csv (searched configs and their uniform baselines),
bracket.csv (uniform widths retrained on their own), line.csv (each searched config against the line through
the retrained uniform networks, by MACs and by params), proxy.csv (the supernet's held-out score of each
retrained network beside its retrained accuracy), stages.csv (where the greedy search's steps went),
variants.csv (the investigation's searches: other criterion or search batch, and their retrained configs),
default.csv (autoslim's default search, retrained, against the uniform line), schedule.csv (the one-cycle supernet
against the cosine ones, epoch by epoch) and retrained.png (test accuracy against MACs and params), and copies the small output files of finished runs.

The summary of every finished retraining (searched config and uniform baseline) is copied to
RESULTS/retrain/flops-B/seedN.json, that of every finished bracket network (a uniform width retrained on
its own) to RESULTS/bracket/uniform-Wx/seedN.json, and that of a variant's retrained config to
RESULTS/variants/V/retrain/flops-B/seedN.json; the tables are made from all of those, so the ones collected
from earlier RUNS folders count too."""

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from autoslim.budget import parse_budget
from autoslim.checkpoint import CHECKPOINT_NAME, save_weights_only

runs, results = Path(sys.argv[1]), Path(sys.argv[2])


def finished_supernet(stage: Path) -> bool:
    summary = stage / "summary.json"
    return summary.exists() and bool(json.loads(summary.read_text()).get("finished"))


# Only a finished supernet and a finished search (the one on that supernet: its summary is written last) replace
# the committed ones: a run in progress in RUNS must not overwrite the figures of the finished one. The supernet's
# files go with its search: to RESULTS/supernet beside the main search when RUNS has one, else (a supernet searched
# only by the variants, e.g. a rerun) to RESULTS/variants/supernet. A weights-only copy of its checkpoint
# (autoslim.checkpoint.save_weights_only) goes with them, so that it can be searched again without training it.
supernet_finished = finished_supernet(runs / "supernet")
main_search = (runs / "search" / "summary.json").exists()
variant_searches = [search for search in sorted(runs.glob("variants/*/search")) if (search / "summary.json").exists()]
copied = []
if supernet_finished and (main_search or variant_searches):
    home = "supernet" if main_search else "variants/supernet"
    copied += [(f"supernet/{name}", f"{home}/{name}") for name in ("summary.json", "metrics.csv", "run.yaml")]
    (results / home).mkdir(parents=True, exist_ok=True)
    save_weights_only(runs / "supernet" / CHECKPOINT_NAME, results / home / CHECKPOINT_NAME)
if supernet_finished and main_search:
    copied += [(f"search/{name}",) * 2 for name in ("summary.json", "trajectory.csv", "pareto.csv", "pareto.png",
                                                     "run.yaml")]
    for config in sorted((runs / "search" / "configs").glob("*.yaml")):
        (results / "configs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, results / "configs" / config.name)
for name, target_name in copied:
    source, target = runs / name, results / target_name
    if source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
# autoslim's default search (reproduce.sh stage `default`), and the default until 2026-12-07 (DEFAULTS), whose run
# folder the stage no longer writes
DEFAULTS = {"default": "autoslim's default search",
            "default_1024": "The default search until 2026-12-07 (slices of 1,024, each candidate's mean bounded alone "
                            "by 3 standard errors, no zone)"}
for name in DEFAULTS:
    if (runs / name / "search" / "summary.json").exists():
        variant_searches.append(runs / name / "search")
for search in variant_searches:  # finished: a search writes its summary last
    target = results / search.relative_to(runs)
    (target / "configs").mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "trajectory.csv", "pareto.png", "run.yaml"):
        shutil.copyfile(search / name, target / name)
    for config in sorted((search / "configs").glob("*.yaml")):
        shutil.copyfile(config, target / "configs" / config.name)


def collect(pattern: str, into: str, finished) -> None:
    """Copy RUNS/<pattern>/seedN/summary.json of finished runs to RESULTS/<into>/<name>/seedN.json, beside the
    ones collected from earlier RUNS folders."""
    for run_dir in sorted(runs.glob(pattern)):
        for summary_path in sorted(run_dir.glob("seed*/summary.json")):
            summary = json.loads(summary_path.read_text())
            if finished(summary):
                target = results / into / run_dir.name / f"{summary_path.parent.name}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(summary_path, target)


def stats(values):
    accuracies = [v["accuracy"] * 100 for v in values]
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return round(statistics.mean(accuracies), 2), round(spread, 2)


def write(name: str, rows: list[dict], header: list[str], cells) -> list[str]:
    """RESULTS/<name>.csv with every field of ``rows`` (an empty field for None), and the markdown lines of the
    table."""
    columns = list(rows[0])
    (results / f"{name}.csv").write_text(",".join(columns) + "\n" + "\n".join(
        ",".join("" if r[c] is None else str(r[c]) for c in columns) for r in rows) + "\n")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(cells(r)) + " |" for r in rows]


def millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def thousands(count: int) -> str:
    return f"{count / 1e3:.1f}k"


collect("retrain/flops-*", "retrain", lambda s: s.get("finished") and (s.get("baseline") or {}).get("finished"))
collect("bracket/uniform-*x", "bracket", lambda s: s.get("finished"))
for variant in sorted(runs.glob("variants/*")):
    collect(f"variants/{variant.name}/retrain/flops-*", f"variants/{variant.name}/retrain", lambda s: s.get("finished"))
for name in DEFAULTS:
    collect(f"{name}/retrain/flops-*", f"{name}/retrain", lambda s: s.get("finished"))
for config in sorted(runs.glob("bracket/uniform-*x.yaml")):  # autoslim cost --width W --save-config
    if (results / "bracket" / config.stem).is_dir():
        shutil.copyfile(config, results / "bracket" / config.name)

rows = []
for budget_dir in sorted((results / "retrain").glob("flops-*"), key=lambda d: parse_budget(d.name[6:])):
    searched = [json.loads(p.read_text()) for p in sorted(budget_dir.glob("seed*.json"))]
    if not searched:
        continue
    uniform = [s["baseline"] for s in searched]
    (mean_s, sd_s), (mean_u, sd_u) = stats(searched), stats(uniform)
    rows.append({"budget": budget_dir.name, "seeds": len(searched), "epochs": searched[0]["epochs"],
                 "autoslim_macs": searched[0]["macs"], "autoslim_params": searched[0]["params"],
                 "autoslim_acc_mean": mean_s, "autoslim_acc_std": sd_s,
                 "uniform_width": uniform[0].get("width"), "uniform_macs": uniform[0]["macs"],
                 "uniform_params": uniform[0]["params"], "uniform_acc_mean": mean_u, "uniform_acc_std": sd_u,
                 "autoslim_seconds": round(statistics.mean(v["seconds"] for v in searched)),
                 "uniform_seconds": round(statistics.mean(v["seconds"] for v in uniform))})

brackets = []
for width_dir in sorted((results / "bracket").glob("uniform-*x"), key=lambda d: float(d.name[8:-1])):
    trained = [json.loads(p.read_text()) for p in sorted(width_dir.glob("seed*.json"))]
    if not trained:
        continue
    mean, sd = stats(trained)
    brackets.append({"width": trained[0].get("width"), "seeds": len(trained), "epochs": trained[0]["epochs"],
                     "macs": trained[0]["macs"], "params": trained[0]["params"], "acc_mean": mean, "acc_std": sd,
                     "seconds": round(statistics.mean(v["seconds"] for v in trained))})

lines = []
if rows:
    lines += write("table", rows, ["budget", "seeds", "AutoSlim MACs", "params", "accuracy % (mean ± sd)", "uniform",
                                   "MACs", "params", "accuracy % (mean ± sd)", "train s (AutoSlim / uniform)"],
                   lambda r: [r["budget"], str(r["seeds"]), millions(r["autoslim_macs"]), thousands(r["autoslim_params"]),
                              f"{r['autoslim_acc_mean']:.2f} ± {r['autoslim_acc_std']:.2f}", f"{r['uniform_width']}x",
                              millions(r["uniform_macs"]), thousands(r["uniform_params"]),
                              f"{r['uniform_acc_mean']:.2f} ± {r['uniform_acc_std']:.2f}",
                              f"{r['autoslim_seconds']:,} / {r['uniform_seconds']:,}"])
if brackets:
    lines += ["", "Uniform widths retrained on their own (the bracket stage):", ""]
    lines += write("bracket", brackets, ["uniform", "seeds", "MACs", "params", "accuracy % (mean ± sd)", "train s"],
                   lambda r: [f"{r['width']}x", str(r["seeds"]), millions(r["macs"]), thousands(r["params"]),
                              f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}", f"{r['seconds']:,}"])


def uniform_networks(rows: list[dict], brackets: list[dict]) -> list[dict]:
    """Every retrained uniform network, baselines and brackets (one per channel count), by MACs: width, macs,
    params, acc_mean, acc_std."""
    networks = {(r["uniform_macs"], r["uniform_params"]): {
        "width": r["uniform_width"], "macs": r["uniform_macs"], "params": r["uniform_params"],
        "acc_mean": r["uniform_acc_mean"], "acc_std": r["uniform_acc_std"]} for r in rows}
    networks.update({(b["macs"], b["params"]): {key: b[key] for key in ("width", "macs", "params", "acc_mean", "acc_std")}
                     for b in brackets})
    return [networks[key] for key in sorted(networks)]


def uniform_points(rows: list[dict], brackets: list[dict]) -> list[tuple[int, int, float]]:
    """(MACs, params, mean accuracy) of every retrained uniform network, by MACs."""
    return [(u["macs"], u["params"], u["acc_mean"]) for u in uniform_networks(rows, brackets)]


def line_at(points: list[tuple[float, float]], x: float) -> tuple[float, str]:
    """The straight line through ``points`` (sorted by x) at ``x``, and "" inside their range, ">=" above it (the
    largest point's value: a wider network is taken to be no worse) or "<=" below it (the smallest's)."""
    if x >= points[-1][0]:
        return points[-1][1], "" if x == points[-1][0] else ">="
    if x <= points[0][0]:
        return points[0][1], "" if x == points[0][0] else "<="
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0), ""
    raise AssertionError("points are not sorted")


def against_line(rows: list[dict], brackets: list[dict]) -> list[str]:
    """RESULTS/line.csv and its markdown lines: each searched config's mean accuracy against the uniform line at its
    MACs and at its params."""
    points = uniform_points(rows, brackets)
    if len(points) < 2:
        return []
    by_macs = [(m, a) for m, _, a in points]
    by_params = sorted((p, a) for _, p, a in points)
    table = []
    for r in rows:
        at_macs, macs_bound = line_at(by_macs, r["autoslim_macs"])
        at_params, params_bound = line_at(by_params, r["autoslim_params"])
        table.append({"budget": r["budget"], "macs": r["autoslim_macs"], "params": r["autoslim_params"],
                      "acc_mean": r["autoslim_acc_mean"], "uniform_at_macs": round(at_macs, 2),
                      "macs_bound": macs_bound, "diff_macs": round(r["autoslim_acc_mean"] - at_macs, 2),
                      "uniform_at_params": round(at_params, 2), "params_bound": params_bound,
                      "diff_params": round(r["autoslim_acc_mean"] - at_params, 2)})
    return write("line", table, ["budget", "AutoSlim MACs", "params", "accuracy %", "uniform line at its MACs",
                                 "difference", "uniform line at its params", "difference"],
                 lambda r: [r["budget"], millions(r["macs"]), thousands(r["params"]), f"{r['acc_mean']:.2f}",
                            f"{r['macs_bound']}{r['uniform_at_macs']:.2f}", f"{r['diff_macs']:+.2f}",
                            f"{r['params_bound']}{r['uniform_at_params']:.2f}", f"{r['diff_params']:+.2f}"])


def proxy(rows: list[dict], brackets: list[dict]) -> list[str]:
    """RESULTS/proxy.csv and its markdown lines: how the search's scores (supernet, held-out images) of the
    retrained networks rank them against their retrained test accuracy. A network is matched to the search's
    scores by its MACs and params (several widths round to the same channels)."""
    summary_path = results / "search" / "summary.json"
    if not summary_path.exists():
        return []
    search = json.loads(summary_path.read_text())
    scored = {(u["macs"], u["params"]): u["accuracy"] for u in search["uniform"]}
    for name, target in search["targets"].items():
        scored[(target["macs"], target["params"])] = target["accuracy"]
        scored[(target["uniform"]["macs"], target["uniform"]["params"])] = target["uniform"]["accuracy"]
    networks = {}
    for r in rows:
        networks[(r["autoslim_macs"], r["autoslim_params"])] = (f"AutoSlim {r['budget'].removeprefix('flops-')}",
                                                                r["autoslim_acc_mean"])
    for u in uniform_networks(rows, brackets):
        networks[(u["macs"], u["params"])] = (f"uniform {u['width']}x", u["acc_mean"])
    table = [{"network": name, "macs": macs, "params": params, "supernet_acc": round(scored[macs, params] * 100, 2),
              "retrained_acc": accuracy}
             for (macs, params), (name, accuracy) in sorted(networks.items()) if (macs, params) in scored]
    if len(table) < 2:
        return []
    pairs = [(a, b) for i, a in enumerate(table) for b in table[i + 1:]
             if a["retrained_acc"] != b["retrained_acc"] and a["supernet_acc"] != b["supernet_acc"]]
    agree = sum((a["supernet_acc"] > b["supernet_acc"]) == (a["retrained_acc"] > b["retrained_acc"]) for a, b in pairs)
    lines = write("proxy", table, ["network", "MACs", "params", "supernet score % (held-out)", "retrained %"],
                  lambda r: [r["network"], millions(r["macs"]), thousands(r["params"]), f"{r['supernet_acc']:.2f}",
                             f"{r['retrained_acc']:.2f}"])
    return lines + ["", f"The supernet orders {agree} of {len(pairs)} pairs of these networks as retraining does."]


def stages(path: Path, name: str) -> list[str]:
    """RESULTS/<name>.csv and its markdown lines: the greedy steps of the trajectory at ``path`` by the stage of the
    unit they cut (``layer2.0.conv1`` -> ``layer2``), with the MACs and params they saved."""
    if not path.exists():
        return []
    with open(path) as stream:
        trajectory = list(csv.DictReader(stream))
    saved: dict[str, list[int]] = {}
    for before, after in zip(trajectory, trajectory[1:]):
        stage = saved.setdefault(after["unit"].split(".")[0], [0, 0, 0])
        stage[0] += 1
        stage[1] += int(before["macs"]) - int(after["macs"])
        stage[2] += int(before["params"]) - int(after["params"])
    table = [{"stage": name, "steps": steps, "macs_saved": macs, "params_saved": params,
              "macs_per_step": round(macs / steps), "params_per_step": round(params / steps)}
             for name, (steps, macs, params) in sorted(saved.items())]
    return write(name, table, ["stage", "greedy steps", "MACs saved", "params saved", "MACs per step",
                                   "params per step"],
                 lambda r: [r["stage"], str(r["steps"]), millions(r["macs_saved"]), thousands(r["params_saved"]),
                            millions(r["macs_per_step"]), thousands(r["params_per_step"])])


def variants(rows: list[dict], brackets: list[dict]) -> list[dict]:
    """One row per target of every variant search in RESULTS/variants: its config, score and retrained accuracy. A
    config with the channels of the committed one for that budget counts that one's retraining."""
    import yaml

    points = uniform_points(rows, brackets)
    by_macs = [(m, a) for m, _, a in points]
    by_params = sorted((p, a) for _, p, a in points)
    table = []
    for summary_path in sorted((results / "variants").glob("*/search/summary.json")):
        variant_dir = summary_path.parent.parent
        summary = json.loads(summary_path.read_text())
        for budget, target in sorted(summary["targets"].items(), key=lambda item: parse_budget(item[0][6:])):
            trained = [json.loads(p.read_text()) for p in sorted((variant_dir / "retrain" / budget).glob("seed*.json"))]
            channels = yaml.safe_load((summary_path.parent / target["config"]).read_text())["channels"]
            committed = results / "configs" / f"{budget}.yaml"
            if not trained and committed.exists() and yaml.safe_load(committed.read_text())["channels"] == channels:
                trained = [json.loads(p.read_text()) for p in sorted((results / "retrain" / budget).glob("seed*.json"))]
            row = {"variant": variant_dir.name, "budget": budget, "step": target["step"], "macs": target["macs"],
                   "params": target["params"], "supernet_acc": round(target["accuracy"] * 100, 2), "seeds": len(trained),
                   "acc_mean": None, "acc_std": None}
            if trained:
                row["acc_mean"], row["acc_std"] = stats(trained)
            for cost, line in (("macs", by_macs), ("params", by_params)):
                row.update({f"uniform_at_{cost}": None, f"{cost}_bound": "", f"diff_{cost}": None})
                if trained and len(line) > 1:
                    at, row[f"{cost}_bound"] = line_at(line, target[cost])
                    row[f"uniform_at_{cost}"], row[f"diff_{cost}"] = round(at, 2), round(row["acc_mean"] - at, 2)
            table.append(row)
    return table


def default(rows: list[dict], brackets: list[dict], name: str = "default") -> list[str]:
    """RESULTS/NAME.csv and its markdown lines: autoslim's default search (RESULTS/NAME), each config's mean test
    accuracy over its seeds against the uniform line at its MACs (as line.csv computes it)."""
    summary_path = results / name / "search" / "summary.json"
    points = uniform_points(rows, brackets)
    if not summary_path.exists() or len(points) < 2:
        return []
    by_macs = [(m, a) for m, _, a in points]
    summary = json.loads(summary_path.read_text())
    table = []
    for budget, target in sorted(summary["targets"].items(), key=lambda item: parse_budget(item[0][6:])):
        trained = [json.loads(p.read_text()) for p in sorted((results / name / "retrain" / budget).glob("seed*.json"))]
        config = results / name / "search" / target.get("config", "-")
        channels = yaml.safe_load(config.read_text())["channels"] if config.is_file() else None
        other = [t.get("seed") for t in trained if channels and t.get("channels", channels) != channels]
        if other:  # a retraining of another network (say, of an earlier search) must not stand for this pick
            raise SystemExit(f"{name}/retrain/{budget}: seeds {other} trained other channels than its config")
        if not trained:
            continue
        mean, sd = stats(trained)
        at, _ = line_at(by_macs, target["macs"])
        table.append({"budget": budget.removeprefix("flops-"), "macs": target["macs"], "params": target["params"],
                      "seeds": len(trained), "acc_mean": mean, "acc_sd": sd, "uniform_at_macs": round(at, 2),
                      "diff_macs": round(mean - at, 2)})
    if not table:
        return []
    return write(name, table, ["budget", "MACs", "params", "seeds", "accuracy % (mean ± sd)",
                                    "uniform line at its MACs", "difference"],
                 lambda r: [r["budget"], millions(r["macs"]), thousands(r["params"]), str(r["seeds"]),
                            f"{r['acc_mean']:.2f} ± {r['acc_sd']:.2f}", f"{r['uniform_at_macs']:.2f}",
                            f"{r['diff_macs']:+.2f}"])


def plot(rows: list[dict], brackets: list[dict], variant_rows: list[dict]) -> None:
    """RESULTS/retrained.png: mean test accuracy (bars: sd over seeds) of the searched configs and the retrained
    variants against the uniform networks (baselines and brackets, joined by a line), by MACs and by params."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uniform = [(u["macs"], u["params"], u["acc_mean"], u["acc_std"]) for u in uniform_networks(rows, brackets)]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, column, label in ((axes[0], 0, "MACs (M)"), (axes[1], 1, "params (k)")):
        scale = 1e6 if column == 0 else 1e3
        if uniform:
            axis.errorbar([u[column] / scale for u in uniform], [u[2] for u in uniform], [u[3] for u in uniform],
                          marker="s", capsize=3, label="uniform width")
        axis.errorbar([r["autoslim_" + ("macs" if column == 0 else "params")] / scale for r in rows],
                      [r["autoslim_acc_mean"] for r in rows], [r["autoslim_acc_std"] for r in rows],
                      marker="o", linestyle="none", capsize=3, label="AutoSlim (searched)")
        for marker, variant in zip("^vDP", sorted({v["variant"] for v in variant_rows if v["seeds"]})):
            trained = [v for v in variant_rows if v["variant"] == variant and v["seeds"]]
            axis.errorbar([v["macs" if column == 0 else "params"] / scale for v in trained],
                          [v["acc_mean"] for v in trained], [v["acc_std"] for v in trained],
                          marker=marker, linestyle="none", capsize=3, label=f"AutoSlim, {variant} search")
        for r in rows:
            axis.annotate(r["budget"].removeprefix("flops-"),
                          (r["autoslim_" + ("macs" if column == 0 else "params")] / scale, r["autoslim_acc_mean"]),
                          textcoords="offset points", xytext=(5, -12), fontsize=8)
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy % (retrained)")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    figure.suptitle(f"CIFAR-10 ResNet-20, {rows[0]['epochs']} epochs, mean ± sd over seeds" if rows else "")
    figure.tight_layout()
    figure.savefig(results / "retrained.png", dpi=120)
    plt.close(figure)


def epoch_evals(home: str) -> dict[int, dict]:
    """The eval rows of RESULTS/<home>/metrics.csv by epoch (empty when there is none)."""
    if not (results / home / "metrics.csv").exists():
        return {}
    with open(results / home / "metrics.csv") as stream:
        return {int(row["epoch"]): row for row in csv.DictReader(stream) if row["kind"] == "eval"}


def supernets() -> list[str]:
    """RESULTS/supernets.csv and its markdown lines: the test accuracy of the largest and smallest configs after each
    epoch of the main supernet and of the variants' own supernet (RESULTS/variants/supernet), side by side."""
    found = {label: epoch_evals(home) for label, home in (("main", "supernet"), ("variants", "variants/supernet"))}
    if not all(found.values()):
        return []
    table = [{"epoch": epoch, **{f"{label}_{size}": round(float(found[label][epoch][f"{size}_accuracy"]) * 100, 2)
                                 for label in found for size in ("largest", "smallest")}}
             for epoch in sorted(set(found["main"]) & set(found["variants"]))]
    return write("supernets", table, ["epoch", "main: largest %", "smallest %", "variants': largest %", "smallest %"],
                 lambda r: [str(r["epoch"]), f"{r['main_largest']:.2f}", f"{r['main_smallest']:.2f}",
                            f"{r['variants_largest']:.2f}", f"{r['variants_smallest']:.2f}"])


def schedule() -> list[str]:
    """RESULTS/schedule.csv and its markdown lines: the one-cycle supernet (reproduce.sh stage `schedule`; its
    metrics.csv is copied from RUNS finished or not, a curve being useful before its end) against the two cosine
    supernets, the test accuracy of the largest / smallest configs after each epoch it has reached."""
    source = runs / "schedule" / "one-cycle"
    for name in ("metrics.csv", "run.yaml") + (("summary.json",) if finished_supernet(source) else ()):
        if (source / name).exists():
            (results / "schedule" / "one-cycle").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, results / "schedule" / "one-cycle" / name)
    curves = {label: epoch_evals(home) for label, home in
              (("one_cycle", "schedule/one-cycle"), ("cosine_main", "supernet"), ("cosine_variants", "variants/supernet"))}
    if not all(curves.values()):
        return []
    table = [{"epoch": epoch, **{f"{label}_{size}": round(float(curve[epoch][f"{size}_accuracy"]) * 100, 2)
                                 for label, curve in curves.items() for size in ("largest", "smallest")}}
             for epoch in sorted(curves["one_cycle"]) if all(epoch in curve for curve in curves.values())]
    return write("schedule", table, ["epoch", "one-cycle", "cosine (main supernet)", "cosine (variants' supernet)"],
                 lambda r: [str(r["epoch"])] + [f"{r[label + '_largest']:.2f} / {r[label + '_smallest']:.2f}"
                                                for label in curves])


default_lines = default(rows, brackets)
if default_lines:
    lines += ["", "autoslim's default search (reproduce.sh stage `default`), each config retrained, against the uniform "
              "line at its MACs:", ""] + default_lines
default_stage_lines = stages(results / "default" / "search" / "trajectory.csv", "default/stages")
if default_stage_lines:
    lines += ["", "Steps of the default search by stage:", ""] + default_stage_lines
old_default_lines = default(rows, brackets, "default_1024")
if old_default_lines:
    lines += ["", DEFAULTS["default_1024"] + ", each config retrained, against the uniform line at its MACs:", ""] + \
        old_default_lines
line_lines = against_line(rows, brackets)
if line_lines:
    lines += ["", "Each searched config against the straight line through the retrained uniform networks (\">=\": beyond "
              "the widest one, whose accuracy is taken):", ""] + line_lines
proxy_lines = proxy(rows, brackets)
if proxy_lines:
    lines += ["", "The search's score of each retrained network (supernet, held-out images) beside its retrained "
              "accuracy:", ""] + proxy_lines
stage_lines = stages(results / "search" / "trajectory.csv", "stages")
if stage_lines:
    lines += ["", "Where the greedy search's steps went, by the stage of the unit each one cut:", ""] + stage_lines
schedule_lines = schedule()
if schedule_lines:
    lines += ["", "Test accuracy of the largest / smallest configs after each epoch: the one-cycle supernet (reproduce.sh "
              "stage `schedule`) against the two cosine ones:", ""] + schedule_lines
variant_rows = variants(rows, brackets)
supernet_lines = supernets()
if supernet_lines:
    lines += ["", "Test accuracy after each epoch of the main supernet and of the one the variants searched:", ""]
    lines += supernet_lines
if variant_rows:
    lines += ["", "The investigation's searches (reproduce.sh stage `variants`), each config retrained on its own, against "
              "the uniform line:", ""]
    lines += write("variants", variant_rows,
                   ["search", "budget", "step", "MACs", "params", "supernet score %", "seeds", "accuracy % (mean ± sd)",
                    "uniform line at its MACs", "difference", "uniform line at its params", "difference"],
                   lambda r: [r["variant"], r["budget"], str(r["step"]), millions(r["macs"]), thousands(r["params"]),
                              f"{r['supernet_acc']:.2f}", str(r["seeds"]),
                              f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}" if r["seeds"] else "not retrained",
                              "" if r["uniform_at_macs"] is None else f"{r['macs_bound']}{r['uniform_at_macs']:.2f}",
                              "" if r["diff_macs"] is None else f"{r['diff_macs']:+.2f}",
                              "" if r["uniform_at_params"] is None else f"{r['params_bound']}{r['uniform_at_params']:.2f}",
                              "" if r["diff_params"] is None else f"{r['diff_params']:+.2f}"])
    for variant in sorted({r["variant"] for r in variant_rows}):
        trajectory = results / "variants" / variant / "search" / "trajectory.csv"
        lines += ["", f"Steps of the `{variant}` search by stage:", ""]
        lines += stages(trajectory, f"variants/{variant}/stages")
if rows:
    plot(rows, brackets, variant_rows)
if lines:
    (results / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
else:
    print("no finished retrainings yet")
