"""Test-retest of whole-network timings: how well the measured latency of the same networks repeats on this machine.

``bench_latency.py`` scores a latency model against one timing of held-out networks. That timing is itself a sample:
if two timings of the same networks, minutes apart, rank them at Spearman 0.80, no model can rank them at 0.95
against either. This script measures that ceiling. It draws the fit networks and the held-out networks exactly as
``bench_latency.py`` does (same seeds), then times, in one process and in this order:

1. the fit networks (as a latency model's fit times them),
2. the held-out networks (as the benchmark times them),
3. both sets together, in one group,
4. the held-out networks again,
5. the fit networks again,

each as the library times (interleaved rounds, each a warm-up and the median of repeats, the least round kept), and
prints for each set its measured range, the Spearman correlation of every pair of its three timings, their median
relative difference, and their level (the median ratio of the later timing to the first). A wide range over the
timing noise gives high test-retest ranks; a narrow one (random configs gather in the middle) gives low ones.

    python benchmarks/latency_retest.py [--space resnet20_cifar [--width-mult 1.0] | --run RUN]
        [--runtime torch] [--batch 1] [--threads 1] [--networks 24] [--held-out 30] [--json FILE]

Run it on an otherwise idle machine. Figures, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from bench_latency import add_source_arguments, held_out_configs, load_supernet  # this script's folder

from autoslim.latency import LatencyKey, TimingSettings, fit_configs, make_timer, spearman

ORDER = ("fit", "held-out", "both", "held-out again", "fit again")


def _pairs(timings: list[np.ndarray]) -> str:
    """Spearman and median difference of every pair of timings of one set, and the level of the later ones."""
    cells = []
    for i in range(len(timings)):
        for j in range(i + 1, len(timings)):
            a, b = timings[i], timings[j]
            cells.append(f"{i + 1}~{j + 1}: {spearman(a, b):.3f}, {100 * statistics.median(abs(b / a - 1)):.1f}%, "
                         f"level {statistics.median(b / a):.2f}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--networks", type=int, default=24, help="fit networks (as bench_latency.py)")
    parser.add_argument("--held-out", type=int, default=30, help="held-out configs (as bench_latency.py)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out configs (the fit uses 0)")
    parser.add_argument("--rounds", type=int, default=TimingSettings.rounds)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write every round of every timing to this file")
    args = parser.parse_args()

    supernet, source = load_supernet(args)
    from autoslim.network.static import materialize

    key = LatencyKey(args.device, args.runtime, args.batch, args.threads)
    timer = make_timer(key, TimingSettings(repeats=args.repeats, rounds=args.rounds))
    fit = fit_configs(supernet, args.networks, seed=0)
    held = held_out_configs(supernet, args.held_out, fit, args.seed, False)
    sets = {"fit": fit, "held-out": held, "both": fit + held, "held-out again": held, "fit again": fit}
    shape = (key.batch, supernet.in_channels, supernet.input_size, supernet.input_size)
    print(f"{source}: {key.describe()}; {len(fit)} fit and {len(held)} held-out networks, each timing the least of "
          f"{args.rounds} interleaved rounds' median of {args.repeats} repeats", flush=True)
    rounds = {}
    for name in ORDER:
        began = time.perf_counter()
        networks = [materialize(supernet, supernet.validate_config(c)) for c in sets[name]]
        rounds[name] = timer.network_rounds(networks, shape)
        print(f"  timed {name} ({len(networks)} networks) in {time.perf_counter() - began:.0f} s", flush=True)
    least = {name: np.array([min(r) for r in rounds[name]]) for name in ORDER}
    n = len(fit)
    held_timings = [least["held-out"], least["both"][n:], least["held-out again"]]
    fit_timings = [least["fit"], least["both"][:n], least["fit again"]]
    print("timings: 1 = alone (fit or held-out), 2 = both sets in one group, 3 = alone again; per pair: Spearman, "
          "median difference, level (median of later / earlier)")
    for name, timings in (("held-out", held_timings), ("fit", fit_timings)):
        spread = statistics.median(max(r) / min(r) for r in rounds[name])
        print(f"{name:>8}: {timings[0].min():.3f}-{timings[0].max():.3f} ms (widest / narrowest "
              f"{timings[0].max() / timings[0].min():.2f}); slowest / fastest round of a network, median "
              f"{spread:.2f}; {_pairs(timings)}")
    if args.json:
        from autoslim.io import write_json

        write_json(args.json, {"source": source, "key": key.to_dict(), "argv": sys.argv[1:],
                               "configs": {"fit": fit, "held-out": held}, "rounds": rounds})


if __name__ == "__main__":
    main()
