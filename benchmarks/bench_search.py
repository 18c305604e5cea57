"""A whole greedy search with activation reuse against the plain loop (issue 4, "Done means").

Both searches run on the same trained supernet, the same held-out batch and the same target. The script
prints wall time, MACs executed and conv/linear layer calls (each over the whole batch) of each, their
ratios, and whether the two trajectories are identical.

    python benchmarks/bench_search.py RUN [--flops 20M] [--eval-batch 2048] [--threads 2]

Target: at least 2x less work with reuse, the same trajectory. Figures, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from autoslim.budget import format_count
from autoslim.search import parse_targets
from autoslim.slimming import SearchSettings, search_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a supernet training run directory")
    parser.add_argument("--flops", default="20M", help="MACs target (default 20M)")
    parser.add_argument("--eval-batch", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain-first", action="store_true", help="run the plain loop first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = parse_targets([args.flops], [])
    results = {}
    order = (False, True) if args.plain_first else (True, False)
    with tempfile.TemporaryDirectory() as scratch:
        for reuse in order:
            settings = SearchSettings(run=args.run, eval_batch=args.eval_batch, reuse=reuse, device="cpu")
            started = time.perf_counter()
            result = search_run(settings, Path(scratch) / f"reuse-{reuse}", targets)
            results[reuse] = (result, time.perf_counter() - started)
            work = result.work
            print(f"{'reuse' if reuse else 'plain':>5}: {len(result.steps) - 1} steps to "
                  f"{format_count(result.steps[-1].macs)} MACs, search {work['seconds']:.1f} s "
                  f"(command {results[reuse][1]:.1f} s), {work['macs_executed'] / 1e12:.3f} TMAC executed, "
                  f"{work['layer_calls']} layer calls over {work['batch']} images", flush=True)
    (fast, fast_time), (plain, plain_time) = results[True], results[False]
    print(f"identical trajectories: {fast.steps == plain.steps}")
    print(f"plain / reuse: wall {plain.work['seconds'] / fast.work['seconds']:.2f}x, "
          f"MACs {plain.work['macs_executed'] / fast.work['macs_executed']:.2f}x, "
          f"layer calls {plain.work['layer_calls'] / fast.work['layer_calls']:.2f}x")


if __name__ == "__main__":
    main()
