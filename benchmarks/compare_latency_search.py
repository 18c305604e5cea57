"""A latency search's pick against the MACs search and the uniform network of equal measured latency, by supernet score.

Issue 20's question: does searching under measured latency find a better network than searching under MACs (or
than a width multiplier) once all of them run equally fast on the device? For the latency pick of LATENCY_SEARCH
(``configs/latency-*.yaml``) the script

1. measures the pick as a whole static network (the search's device, runtime, batch and threads),
2. locates the neighbourhood of equal latency: the first step of MACS_SEARCH (a search of the same supernet under
   ``--flops``) at most as slow as the pick (bisection over the steps, then every step of a window around the
   crossing, since measured latency is not strictly monotone along a trajectory), and the widest uniform network at
   most as slow (bisection over the distinct uniform configs); each of these first looks times the network beside
   the pick, in ``--decide`` interleaved rounds, so that a slow stretch of the machine touches both,
3. times the pick, ``--window`` steps and uniform networks either side of each crossing and the full network in
   ``--rounds`` interleaved rounds (each a median of ``--repeats`` runs; a network's latency is its least round, as
   the library times), and only then chooses the first step and the widest uniform network that ran at most
   ``--tolerance`` (2%) slower than the pick: as fast, as far as timings on one machine repeat (one early look can
   be off by a third on a busy machine; the rounds are what the table reports),
4. notes when a choice lies at the edge of its window (widen ``--window``),
5. scores the pick, the chosen networks, the next wider of each and the full network (``--score all``: every one
   timed) with the supernet on every held-out image (or the first ``--images``), the same way for all
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
import sys
from pathlib import Path
from typing import Optional

import torch

from autoslim.channel_config import load_config
from autoslim.checkpoint import load_run
from autoslim.io import read_yaml
from autoslim.latency import TimingSettings, make_timer
from autoslim.network.static import materialize
from autoslim.network.supernet import last_accepted
from autoslim.search.runner import SearchSettings
from autoslim.search.sliced import SlicedScorer
from autoslim.search.trajectory import read_trajectory


def search_settings(saved: dict) -> SearchSettings:
    """A search's run.yaml as its settings (keys of other versions left out)."""
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    return SearchSettings(**{k: v for k, v in saved.items() if k in names})


def first_within(fits, steps: int, window: int) -> int:
    """Index of the first step that ``fits`` (runs within the budget): bisection, then a scan of ``window`` steps
    either side.

    ``fits(i)`` decides step ``i`` (cached by the caller); step ``steps - 1`` must fit.
    """
    low, high = 0, steps - 1  # fits(high); find the first such index assuming monotone
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    for index in range(max(0, high - window), min(steps, high + window + 1)):
        if fits(index):
            return index
    return high


def first_within_budget(names: list[str], latency: dict[str, float], budget: float) -> Optional[str]:
    """The first of ``names`` (in order of preference) whose latency is at most ``budget``; None if none is."""
    return next((name for name in names if latency[name] <= budget), None)


def uniform_ladder(supernet, resolution: float = 0.01) -> list[tuple[str, dict[str, int]]]:
    """The distinct uniform configs of the supernet, narrowest first, each named by the widths on the grid of
    ``resolution`` that give it (uniform 0.56x through 0.68x of a 1.5x ResNet-20 are one network: "0.56-0.68x")."""
    ladder: list[tuple[list[float], dict[str, int]]] = []
    for i in range(1, int(round(supernet.width_mult / resolution)) + 1):
        width = round(i * resolution, 6)
        config = supernet.uniform_config(width)
        if ladder and ladder[-1][1] == config:
            ladder[-1][0].append(width)
        else:
            ladder.append(([width], config))
    return [(f"{w[0]:g}x" if len(w) == 1 else f"{w[0]:g}-{w[-1]:g}x", config) for w, config in ladder]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("latency_search", type=Path, help="a search directory with a configs/latency-*.yaml pick")
    parser.add_argument("macs_search", type=Path, help="a --flops search of the same supernet")
    parser.add_argument("--label", help="the latency pick (default: the only configs/latency-*.yaml)")
    parser.add_argument("--run", type=Path, help="the supernet run (default: the latency search's run.yaml)")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--window", type=int, default=3,
                        help="MACs search steps and uniform networks either side of each crossing, timed in the rounds")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="slower than the pick by at most this fraction counts as equally fast (default 0.02: "
                             "two timings of the same networks differ by a median 2-3%% on an idle 2-core VM)")
    parser.add_argument("--decide", type=int, default=3, help="interleaved rounds of each first look beside the pick")
    parser.add_argument("--images", type=int, help="score the first N held-out images only (default: all)")
    parser.add_argument("--data-dir", help="where the run's data lives now")
    parser.add_argument("--score", default="chosen", choices=["chosen", "all"],
                        help="score the chosen networks and the next wider of each (default), or every one timed")
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
    timer = make_timer(key, TimingSettings(repeats=args.repeats, clock=args.clock, rounds=args.rounds))
    look_timer = make_timer(key, TimingSettings(repeats=args.repeats, clock=args.clock, rounds=args.decide))
    print(f"{pick_path.stem} of {args.latency_search} against {args.macs_search} ({len(macs_steps)} steps), "
          f"{key.describe()}, {args.clock} clock", flush=True)

    shape = (key.batch, supernet.in_channels, supernet.input_size, supernet.input_size)
    cache: dict[tuple, bool] = {}

    def fits(config) -> bool:
        """A first look: ``config`` timed beside the pick (--decide interleaved rounds) and at most as slow."""
        found = tuple(sorted(config.items()))
        if found not in cache:
            pick_ms, config_ms = look_timer.networks([materialize(supernet, pick), materialize(supernet, config)],
                                                     shape)
            cache[found] = config_ms <= pick_ms
        return cache[found]

    # locate: the neighbourhood of equal latency, each network looked at beside the pick
    steps = len(macs_steps)
    index = first_within(lambda i: fits(macs_steps[i].config), steps, args.window) \
        if fits(macs_steps[-1].config) else steps - 1
    ladder = uniform_ladder(supernet)
    within = (last_accepted(lambda i: fits(ladder[i - 1][1]), len(ladder)) or 1) - 1
    print(f"first looks ({len(cache)} networks, each beside the pick): the MACs search crosses the pick's latency near "
          f"step {index}, the uniform widths near {ladder[within][0]}", flush=True)
    macs_names = {f"MACs search step {i}": macs_steps[i].config
                  for i in range(max(0, index - args.window), min(steps, index + args.window + 1))}
    uniform_names = {f"uniform {widths}": config for widths, config in
                     reversed(ladder[max(0, within - args.window):within + args.window + 1])}  # widest first
    networks = {pick_path.stem: pick, **macs_names, **uniform_names, "full network": largest}

    # time every candidate together in interleaved rounds; choose from the least round of each
    print(f"timing {len(networks)} networks in {args.rounds} interleaved rounds", flush=True)
    timed = timer.network_rounds([materialize(supernet, config) for config in networks.values()], shape)
    rounds = dict(zip(networks, timed))
    for name, values in rounds.items():
        print(f"  {name}: " + " ".join(f"{v:.3f}" for v in values), flush=True)
    latency = {name: min(values) for name, values in rounds.items()}
    budget = latency[pick_path.stem] * (1 + args.tolerance)  # as fast as the pick, to the timings' repeatability
    chosen_macs = first_within_budget(list(macs_names), latency, budget)
    chosen_uniform = first_within_budget(list(uniform_names), latency, budget)
    notes = []
    if chosen_macs is None:
        notes.append(f"no MACs search step of the window ran within {budget:.3f} ms: widen --window"
                     " or continue the MACs search to a lower --flops")
    elif chosen_macs == next(iter(macs_names)) and chosen_macs != "MACs search step 0":
        notes.append("the window's first MACs search step ran within the pick's latency: widen --window")
    if chosen_uniform is None:
        notes.append(f"no uniform network of the window ran within {budget:.3f} ms: widen --window")
    elif chosen_uniform == next(iter(uniform_names)) and uniform_names[chosen_uniform] != ladder[-1][1]:
        notes.append("the window's widest uniform network ran within the pick's latency: widen --window")
    roles = {pick_path.stem: "pick", "full network": "full"}
    roles.update({chosen_macs: "MACs search, equal latency", chosen_uniform: "uniform, equal latency"})
    roles.pop(None, None)
    scored = set(roles) if args.score == "chosen" else set(networks)
    for chosen, group in ((chosen_macs, list(macs_names)), (chosen_uniform, list(uniform_names))):
        if chosen is not None and args.score == "chosen" and group.index(chosen) > 0:
            scored.add(group[group.index(chosen) - 1])  # the next wider, just over the pick's latency

    data = run.load_data(data_dir=args.data_dir)
    size = min(args.images or len(data.split("search")), len(data.split("search")))
    images, labels = next(iter(data.batches("search", size, shuffle=False, augment=False, device="cpu")))
    scorer = SlicedScorer(supernet, images, labels, slice_size=settings.slice_size or 512, confidence=None)
    rows = []
    for name, config in networks.items():
        row = {"network": name, "role": roles.get(name, ""), "macs": supernet.cost(config).macs,
               "params": supernet.cost(config).params, "latency_ms": round(latency[name], 4),
               "rounds_ms": " ".join(f"{v:.4f}" for v in rounds[name]), "accuracy": "", "loss": "", "kl": ""}
        if name in scored:
            with torch.no_grad():
                score = scorer(config, [(None, config)])[0]
            row.update(accuracy=round(score.accuracy, 4), loss=round(score.loss, 4),
                       kl=round(score.kl, 4) if score.kl is not None else "")
        rows.append(row)
    print(f"\nheld-out images: {size}; latency: the least of {args.rounds} interleaved rounds, each the median of "
          f"{args.repeats} runs; equally fast: at most {budget:.3f} ms (the pick's {latency[pick_path.stem]:.3f} ms "
          f"+ {100 * args.tolerance:g}%)\n")
    print("| network | chosen as | MACs | params | latency ms | held-out top-1 % | cross-entropy "
          "| KL from largest |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        top1 = f"{100 * row['accuracy']:.2f}" if row["accuracy"] != "" else ""
        print(f"| {row['network']} | {row['role']} | {row['macs'] / 1e6:.2f}M | {row['params'] / 1e3:.1f}k | "
              f"{row['latency_ms']:.3f} | {top1} | {row['loss']} | {row['kl']} |")
    for note in notes:
        print(f"note: {note}")
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
