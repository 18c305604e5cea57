"""Which held-out signal should the search follow? Usage: python proxies.py [SUPERNET] [--data data/cifar10.npz]

The labelled set is every network of this folder that was retrained from scratch (uniform widths and searched
configs, 2 seeds each, their summaries in retrain/, bracket/ and variants/*/retrain/). Each is scored on the
supernet (default: the committed variants/supernet) on its held-out search split, with nine signals: top-1,
cross-entropy (CE) and the KL divergence to the largest config's predictions, each with BatchNorm statistics of
the scored batch itself (the first 2,048 held-out images, as the search has used, or all 5,000) or recalibrated on
16 training batches of 128 (then evaluated in eval mode on all 5,000).

Writes, beside this script:
- proxies.csv: every network's signals and retrained accuracy (mean of its seeds);
- proxy_ranks.csv: per signal, Kendall tau and Spearman rho with retrained accuracy, concordant pairs over all
  pairs, and over the pairs whose MACs differ by less than 25% ("within a budget");
- proxy_noise.csv: per signal (batch-statistics BatchNorm at 2,048 and 5,000 images), how stable the greedy choice is at four steps of the drop-per-mac trajectory of
  this supernet: every unit shrunk by one choice is scored, the criterion (the signal lost per MAC saved, a
  step that loses nothing first) picks one, and 1,000 bootstrap resamples of the held-out images say how often
  the same unit is picked, and how far the winner leads the runner-up in bootstrap standard deviations.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autoslim.checkpoint import load_run
from autoslim.search.scoring import batch_statistics
from autoslim.search.trajectory import read_trajectory
from autoslim.training.calibrate import recalibrate

HERE = Path(__file__).resolve().parent
SIGNALS = ("top1", "ce", "kl")
MODES = ("bs2048", "bs5000", "recal5000")
STEPS_FOR_NOISE = (10, 25, 40, 50)  # steps of variants/drop-per-mac/search/trajectory.csv (91.5M MACs at step 0)
NOISE_MODES = ("bs2048", "bs5000")  # recalibrating per candidate costs 16 more batches per candidate: left out
BOOTSTRAP = 1000


def labelled_set() -> list[dict]:
    """Retrained networks: channels, MACs, params and the mean test accuracy of their seeds, one row per config."""
    groups: dict[tuple, dict] = {}
    paths = sorted(HERE.glob("retrain/*/seed*.json")) + sorted(HERE.glob("bracket/*/seed*.json")) \
        + sorted(HERE.glob("variants/*/retrain/*/seed*.json"))
    for path in paths:
        summary = json.loads(path.read_text())
        runs = [(summary, _name(path, summary))]
        if summary.get("baseline"):
            base = summary["baseline"]
            runs.append((base, f"uniform {base['width']:.2f}x"))
        for run, name in runs:
            key = tuple(sorted(run["channels"].items()))
            entry = groups.setdefault(key, {"name": name, "channels": dict(run["channels"]), "macs": run["macs"],
                                            "params": run["params"], "accuracies": {}})
            entry["accuracies"][run["seed"]] = 100 * run["accuracy"]
    rows = list(groups.values())
    for row in rows:
        row["retrained"] = sum(row["accuracies"].values()) / len(row["accuracies"])
    return sorted(rows, key=lambda r: r["macs"])


def _name(path: Path, summary: dict) -> str:
    if "bracket" in path.parts:
        return f"uniform {path.parent.name.split('-')[1]}"
    if "variants" in path.parts:
        return f"{path.parts[-4]} {path.parent.name}"
    return f"accuracy {path.parent.name} (1st supernet)"


class Signals:
    """Per-image top-1, CE and KL of configs on the held-out images, in the three BatchNorm modes."""

    def __init__(self, run, data) -> None:
        self.supernet = run.supernet
        search = data.split("search")
        images, labels = next(iter(data.batches("search", len(search), shuffle=False, augment=False)))
        self.images, self.labels = images, labels
        generator = torch.Generator().manual_seed(0)
        self.calibration = [b for _, b in zip(range(16), data.batches("train", 128, shuffle=True, augment=False,
                                                                       generator=generator))]
        self.teacher = {mode: self._logits(self.supernet.largest_config(), mode) for mode in MODES}

    @torch.no_grad()
    def _logits(self, config, mode: str) -> torch.Tensor:
        self.supernet.set_config(config)
        if mode == "recal5000":
            recalibrate(self.supernet, self.calibration)
            self.supernet.eval()
            return torch.cat([self.supernet(chunk) for chunk in self.images.split(1000)]).float()
        images = self.images[:2048] if mode == "bs2048" else self.images
        with batch_statistics(self.supernet):
            return self.supernet(images).float()

    def per_image(self, config, mode: str) -> dict[str, torch.Tensor]:
        """``{signal: tensor of one value per image}``, each oriented so that higher is better."""
        logits = self._logits(config, mode)
        labels = self.labels[: len(logits)]
        teacher = self.teacher[mode].log_softmax(1)
        log_p = logits.log_softmax(1)
        return {"top1": (logits.argmax(1) == labels).float(),
                "ce": -F.cross_entropy(logits, labels, reduction="none"),
                "kl": -(teacher.exp() * (teacher - log_p)).sum(1)}


def kendall_spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    pairs = list(itertools.combinations(range(len(x)), 2))
    s = sum(math.copysign(1, (x[i] - x[j]) * (y[i] - y[j])) if (x[i] - x[j]) * (y[i] - y[j]) else 0 for i, j in pairs)
    tau = s / len(pairs)
    rank = lambda v: {i: r for r, i in enumerate(sorted(range(len(v)), key=lambda k: v[k]))}  # noqa: E731
    rx, ry = rank(x), rank(y)
    n = len(x)
    rho = 1 - 6 * sum((rx[i] - ry[i]) ** 2 for i in range(n)) / (n * (n * n - 1))
    return tau, rho


def concordant(rows: list[dict], key: str, local: bool) -> tuple[int, int]:
    good = total = 0
    for a, b in itertools.combinations(rows, 2):
        if local and max(a["macs"], b["macs"]) > 1.25 * min(a["macs"], b["macs"]):
            continue
        if a["retrained"] == b["retrained"]:
            continue
        total += 1
        good += (a[key] - b[key]) * (a["retrained"] - b["retrained"]) > 0
    return good, total


def noise(signals: Signals, run, trajectory: list, out_rows: list[dict]) -> None:
    supernet = run.supernet
    choices = {u.name: sorted(u.choices) for u in supernet.slimmable_units}
    generator = torch.Generator().manual_seed(0)
    for number in STEPS_FOR_NOISE:
        current = trajectory[number].config
        macs = supernet.cost(current).macs
        candidates = []
        for unit, ladder in choices.items():
            lower = [c for c in ladder if c < current[unit]]
            if lower:
                config = dict(current, **{unit: lower[-1]})
                saved = macs - supernet.cost(config).macs
                if saved > 0:
                    candidates.append((unit, config, saved))
        print(f"noise: step {number} ({macs / 1e6:.1f}M MACs), {len(candidates)} candidates", flush=True)
        for mode in NOISE_MODES:
            base = signals.per_image(current, mode)
            values = [signals.per_image(config, mode) for _, config, _ in candidates]
            size = len(base["top1"])
            draws = [torch.randint(size, (size,), generator=generator) for _ in range(BOOTSTRAP)]
            for signal in SIGNALS:
                saved = torch.tensor([s for _, _, s in candidates], dtype=torch.float64)
                deltas = torch.stack([(base[signal] - v[signal]).double() for v in values])  # candidates x images

                def choose(index=None):
                    drop = (deltas if index is None else deltas[:, index]).mean(1)
                    ratio = drop / saved
                    # free steps (no drop) first, the largest saving first; then the smallest drop per MAC
                    key = torch.where(drop <= 0, -(1 + saved), ratio)
                    order = torch.argsort(key)
                    return int(order[0]), key

                best, key = choose()
                runner = int(torch.argsort(key)[1])
                same, leads = 0, []
                for draw in draws:
                    pick, k = choose(draw)
                    same += pick == best
                    leads.append(float(k[runner] - k[best]))
                lead = float(key[runner] - key[best])
                sd = torch.tensor(leads).std().item()
                out_rows.append({"step": number, "macs": macs, "mode": mode, "signal": signal,
                                 "candidates": len(candidates), "choice": candidates[best][0],
                                 "runner_up": candidates[runner][0], "same_choice": same / BOOTSTRAP,
                                 "lead_in_sd": lead / sd if sd > 0 else math.inf})


def write_tables(rows: list[dict], keys: list[str]) -> None:
    with open(HERE / "proxies.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["network", "macs", "params", "retrained_acc", "seeds", *keys])
        for row in rows:
            writer.writerow([row["name"], row["macs"], row["params"], f"{row['retrained']:.3f}", len(row["accuracies"]),
                             *(f"{row[k]:.5f}" for k in keys)])
    with open(HERE / "proxy_ranks.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["signal", "bn", "kendall_tau", "spearman_rho", "concordant_pairs", "pairs",
                         "concordant_within_budget", "pairs_within_budget"])
        for mode in MODES:
            for signal in SIGNALS:
                key = f"{signal}_{mode}"
                tau, rho = kendall_spearman([r[key] for r in rows], [r["retrained"] for r in rows])
                good, total = concordant(rows, key, local=False)
                near, near_total = concordant(rows, key, local=True)
                writer.writerow([signal, mode, f"{tau:.3f}", f"{rho:.3f}", good, total, near, near_total])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("supernet", nargs="?", default=str(HERE / "variants" / "supernet"))
    parser.add_argument("--data", default="data/cifar10.npz")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-noise", action="store_true")
    parser.add_argument("--only-noise", action="store_true", help="keep proxies.csv and proxy_ranks.csv as they are")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.time()
    run = load_run(args.supernet)
    data = run.load_data(data_dir=args.data)
    signals = Signals(run, data)
    rows = [] if args.only_noise else labelled_set()
    for row in rows:
        for mode in MODES:
            values = signals.per_image(row["channels"], mode)
            for signal in SIGNALS:
                row[f"{signal}_{mode}"] = float(values[signal].mean())
        print(f"{time.time() - began:6.0f} s  {row['name']:<32} {row['macs'] / 1e6:6.2f}M  retrained "
              f"{row['retrained']:.2f}  top1@5000 {100 * row['top1_bs5000']:.2f}", flush=True)
    keys = [f"{s}_{m}" for m in MODES for s in SIGNALS]
    if rows:
        write_tables(rows, keys)
    if not args.skip_noise:
        trajectory = read_trajectory(HERE / "variants" / "drop-per-mac" / "search" / "trajectory.csv",
                                     run.supernet.largest_config())
        noise_rows: list[dict] = []
        noise(signals, run, trajectory, noise_rows)
        with open(HERE / "proxy_noise.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(noise_rows[0]), lineterminator="\n")
            writer.writeheader()
            for row in noise_rows:
                writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"done in {time.time() - began:.0f} s")


if __name__ == "__main__":
    random.seed(0)
    main()
