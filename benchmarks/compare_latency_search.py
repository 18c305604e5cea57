"""A latency search's pick against the MACs search and the uniform network of equal measured latency, by supernet score.

Issue 20's question: does searching under measured latency find a better network than searching under MACs (or
than a width multiplier) once all of them run equally fast on the device? For the latency pick of LATENCY_SEARCH
(``configs/latency-*.yaml``) the script

1. measures the pick as a whole static network (the search's device, runtime, batch and threads),
2. walks the trajectory of MACS_SEARCH (a search of the same supernet under ``--flops``) for the first step whose
   measured latency is at most the pick's (bisection over the steps, then every step of a window around the
   crossing, since measured latency is not strictly monotone along a trajectory; every choice rests on the median
   of ``--decide`` measurements),
3. bisects the uniform widths for the widest uniform network measured within the pick's latency,
4. times these networks, with the step and the uniform width just above them, in ``--rounds`` interleaved rounds
   (each keeps its median, so that a drift of the machine touches all alike),
5. scores each with the supernet on every held-out image (or the first ``--images``), the same way for all
   (slices of the latency search's size, each slice's own BatchNorm statistics, no early stopping): top-1
   accuracy, cross-entropy and the KL divergence from the largest config's predictions,

and prints a table (``--csv`` also writes it). The supernet score ranks the networks the way the search sees them;
retraining decides what they are worth (``results/cifar10_resnet20_latency`` does that for ResNet-20).

    python benchmarks/compare_latency_search.py LATENCY_SEARCH MACS_SEARCH [--label latency-2.5ms] [--run RUN]
        [--clock wall|thread] [--rounds 5] [--window 3] [--images N] [--data-dir DATA] [--csv OUT.csv]

``--clock thread`` times the CPU time of the timing thread (one thread only), for a machine that runs other work.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

from autoslim.channel_config import load_config
from autoslim.checkpoint import load_run
from autoslim.io import read_yaml
from autoslim.latency import TimingSettings, make_timer, measure_config
from autoslim.network.supernet import widest_uniform
from autoslim.search.runner import SearchSettings
from autoslim.search.sliced import SlicedScorer
from autoslim.search.trajectory import read_trajectory


def search_settings(saved: dict) -> SearchSettings:
    """A search's run.yaml as its settings (keys of other versions left out)."""
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    return SearchSettings(**{k: v for k, v in saved.items() if k in names})


def first_within(latencies, budget: float, steps: int, window: int) -> int:
    """Index of the first step measured within ``budget``: bisection, then a scan of ``window`` steps either side.

    ``latencies(i)`` measures step ``i`` (cached by the caller); step ``steps - 1`` must be within the budget.
    """
    low, high = 0, steps - 1  # latencies(high) <= budget; find the first such index assuming monotone
    while high - low > 1:
        middle = (low + high) // 2
        if latencies(middle) <= budget:
            high = middle
        else:
            low = middle
    for index in range(max(0, high - window), min(steps, high + window + 1)):
        if latencies(index) <= budget:
            return index
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("latency_search", type=Path, help="a search directory with a configs/latency-*.yaml pick")
    parser.add_argument("macs_search", type=Path, help="a --flops search of the same supernet")
    parser.add_argument("--label", help="the latency pick (default: the only configs/latency-*.yaml)")
    parser.add_argument("--run", type=Path, help="the supernet run (default: the latency search's run.yaml)")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--window", type=int, default=3, help="steps either side of the crossing measured")
    parser.add_argument("--decide", type=int, default=3, help="measurements (their median) behind each choice")
    parser.add_argument("--images", type=int, help="score the first N held-out images only (default: all)")
    parser.add_argument("--data-dir", help="where the run's data lives now")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args()

    settings = search_settings(read_yaml(args.latency_search / "run.yaml"))
    picks = sorted((args.latency_search / "configs").glob("latency-*.yaml"))
    if args.label:
        picks = [p for p in picks if p.stem == args.label]
    if len(picks) != 1:
        sys.exit(f"{args.latency_search}/configs: expected one latency pick (--label), found {[p.stem for p in picks]}")
    pick_path = picks[0]
    run = load_run(args.run or settings.run, device="cpu")
    supernet = run.supernet
    largest = supernet.largest_config()
    pick = supernet.validate_config(dict(load_config(pick_path).channels))
    macs_steps = read_trajectory(args.macs_search / "trajectory.csv", largest)
    key = settings.latency_key
    timer = make_timer(key, TimingSettings(repeats=args.repeats, clock=args.clock))
    print(f"{pick_path.stem} of {args.latency_search} against {args.macs_search} ({len(macs_steps)} steps), "
          f"{key.describe()}, {args.clock} clock", flush=True)

    cache: dict[tuple, float] = {}

    def measure(config) -> float:
        found = tuple(sorted(config.items()))
        if found not in cache:
            cache[found] = statistics.median(measure_config(supernet, config, timer) for _ in range(args.decide))
        return cache[found]

    budget = measure(pick)
    print(f"pick measured at {budget:.3f} ms", flush=True)
    if measure(macs_steps[-1].config) > budget:
        sys.exit(f"the MACs search ends at {measure(macs_steps[-1].config):.3f} ms, above the pick's {budget:.3f} ms:"
                 " continue it to a lower --flops")
    index = first_within(lambda i: measure(macs_steps[i].config), budget, len(macs_steps), args.window)
    uniform = widest_uniform(supernet, lambda config: measure(config) <= budget)
    if uniform is None:
        sys.exit(f"no uniform network runs within {budget:.3f} ms")
    wider = next(((w, c) for w in [round(uniform[0] + 0.01 * i, 2) for i in range(1, 200)]
                  if w <= supernet.width_mult + 1e-9
                  for c in [supernet.uniform_config(w)] if c != uniform[1]), None)

    networks = {pick_path.stem: pick, f"MACs search step {index}": macs_steps[index].config}
    if index > 0:
        networks[f"MACs search step {index - 1} (one step wider)"] = macs_steps[index - 1].config
    networks[f"uniform {uniform[0]:g}x"] = uniform[1]
    if wider is not None:
        networks[f"uniform {wider[0]:g}x (next wider)"] = wider[1]
    networks["full network"] = largest

    rounds: dict[str, list[float]] = {name: [] for name in networks}
    for r in range(args.rounds):
        for name, config in networks.items():
            rounds[name].append(measure_config(supernet, config, timer))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rounds.items()), flush=True)

    data = run.load_data(data_dir=args.data_dir)
    size = min(args.images or len(data.split("search")), len(data.split("search")))
    images, labels = next(iter(data.batches("search", size, shuffle=False, augment=False, device="cpu")))
    scorer = SlicedScorer(supernet, images, labels, slice_size=settings.slice_size or 512, confidence=None)
    rows = []
    for name, config in networks.items():
        with torch.no_grad():
            score = scorer(config, [(None, config)])[0]
        cost = supernet.cost(config)
        rows.append({"network": name, "macs": cost.macs, "params": cost.params,
                     "latency_ms": round(statistics.median(rounds[name]), 4),
                     "rounds_ms": " ".join(f"{v:.4f}" for v in rounds[name]),
                     "accuracy": round(score.accuracy, 4), "loss": round(score.loss, 4),
                     "kl": round(score.kl, 4) if score.kl is not None else ""})
    print(f"\nheld-out images: {size}; latency: median of {args.rounds} interleaved rounds, each the "
          f"median of {args.repeats} runs\n")
    print("| network | MACs | params | latency ms | held-out top-1 % | cross-entropy | KL from largest |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['network']} | {row['macs'] / 1e6:.2f}M | {row['params'] / 1e3:.1f}k | {row['latency_ms']:.3f} | "
              f"{100 * row['accuracy']:.2f} | {row['loss']:.4f} | {row['kl']} |")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.csv.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
