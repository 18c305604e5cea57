"""Search speed: scoring on every held-out image (in slices, dropping candidates that cannot win) against the
2,048-image search, on the same trained supernet, one process, one after the other.

Searches (all with the default criterion and signal unless --signal says otherwise; ``--only`` picks some):

- ``batch2048``: the first 2,048 held-out images, every candidate scored on all of them;
- ``all``: every held-out image, every candidate scored on all of them (the exhaustive all-images search);
- ``all-bound``: every held-out image, candidates that lose more per unit saved than the leader (by 3 standard errors
  of their per-image difference) dropped after each slice (the default search);
- ``plain``: ``all-bound`` without activation reuse (every candidate run from the input);
- ``all-bound-512``: ``all-bound`` in slices of 512 (``--slice 512``: a decision after every 512 images, BatchNorm
  statistics of 512 images);
- ``all-bound-512-2se``: ``all-bound-512`` with a bound of 2 standard errors.

For each it prints wall time, multiply-adds executed, candidate-images scored and candidates dropped, then the
ratios to ``batch2048`` and whether ``all-bound`` made the same choices as ``all`` (the bound's only risk).

    python benchmarks/bench_search.py RUN [--flops 20M ...] [--threads 1] [--only batch2048,all-bound] [--out DIR]

``--out DIR`` keeps each search in DIR/NAME (a search folder like ``autoslim search`` writes).

Figures, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from autoslim.budget import format_count
from autoslim.search.runner import SearchSettings, search_run
from autoslim.search.targets import parse_targets

SEARCHES = {
    "batch2048": dict(eval_batch=2048, confidence=None),
    "all": dict(confidence=None),
    "all-bound": dict(),
    "plain": dict(reuse=False),
    "all-bound-512": dict(slice_size=512),
    "all-bound-512-2se": dict(slice_size=512, confidence=2.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a supernet training run directory")
    parser.add_argument("--flops", action="append", help="MACs target, repeatable (default 20M)")
    parser.add_argument("--signal", default="kl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="batch2048,all,all-bound", help="comma-separated searches to run")
    parser.add_argument("--out", type=Path, help="keep each search in OUT/NAME (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = parse_targets(args.flops or ["20M"], [])
    names = args.only.split(",")
    unknown = [n for n in names if n not in SEARCHES]
    if unknown:
        parser.error(f"unknown searches {unknown}: choose from {', '.join(SEARCHES)}")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            settings = SearchSettings(run=args.run, signal=args.signal, device="cpu", **SEARCHES[name])
            started = time.perf_counter()
            result = search_run(settings, (args.out or Path(scratch)) / name, targets)
            command = time.perf_counter() - started
            results[name] = result
            work = result.work
            print(f"{name:>10}: {len(result.steps) - 1} steps to {format_count(result.steps[-1].macs)} MACs on "
                  f"{work['batch']} images in {work['slices']} slices; search {work['seconds']:.1f} s (command "
                  f"{command:.1f} s), {work['macs_executed'] / 1e12:.3f} TMAC executed, {work['layer_calls']} layer "
                  f"calls, {work['candidates_dropped'] or 0} candidates dropped early", flush=True)
    base = results.get("batch2048")
    if base is not None:
        for name, result in results.items():
            if name != "batch2048":
                print(f"{name} / batch2048: wall {result.work['seconds'] / base.work['seconds']:.2f}x, "
                      f"MACs {result.work['macs_executed'] / base.work['macs_executed']:.2f}x")
    for name, result in results.items():  # without the exhaustive search: the steps the default search made
        print(f"{name}: steps {' '.join(f'{s.unit}:{s.channels}' for s in result.steps[1:])}")
    if "all" in results and "all-bound" in results:
        same = [s.config for s in results["all"].steps] == [s.config for s in results["all-bound"].steps]
        print(f"all-bound made the same choices as all: {same}")
        if not same:
            first = next(i for i, (a, b) in enumerate(zip(results["all"].steps, results["all-bound"].steps))
                         if a.config != b.config)
            print(f"  first difference at step {first}")


if __name__ == "__main__":
    main()
