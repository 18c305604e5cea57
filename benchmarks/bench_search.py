"""Search speed: scoring on every held-out image (in slices, dropping candidates that cannot win) against the
2,048-image search, on the same trained supernet, one process, one after the other.

Searches (all with the default criterion and signal unless --signal says otherwise; ``--only`` picks some):

- ``batch2048``: the first 2,048 held-out images in slices of 1,024, every candidate scored on all of them;
- ``all``: every held-out image in slices of 512, every candidate scored on all of them (the exhaustive search);
- ``all-bound``: every held-out image in slices of 1,024, candidates that lose more per unit saved than the leader (by
  3 standard errors of their per-image difference) dropped after each slice (the default search until 2026-12-07);
- ``plain``: the default search without activation reuse (every candidate run from the input);
- ``all-bound-512``: ``all-bound`` in slices of 512 (``--slice 512``: a decision after every 512 images, BatchNorm
  statistics of 512 images);
- ``all-bound-512-2se``: ``all-bound-512`` with a bound of 2 standard errors;
- ``default``: ``autoslim search``'s defaults: ``all-bound-512-2se`` that also drops a candidate once it cannot beat the
  leader by more than 10% (``--indifference 0.1``).

For each it prints wall time, multiply-adds executed, candidate-images scored and candidates dropped, then the
ratios to ``batch2048`` and whether ``default`` made the same choices as ``all`` (what the bound and the zone risk).
``--parallel`` runs the searches at the same time, one process each, so that they share the machine alike (on a
machine with a core per search and ``--threads 1``).

    python benchmarks/bench_search.py RUN [--flops 20M ...] [--threads 1] [--only batch2048,default] [--out DIR] [--parallel]

``--out DIR`` keeps each search in DIR/NAME (a search folder like ``autoslim search`` writes).

Figures, not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

from autoslim.budget import format_count
from autoslim.search.runner import SearchSettings, search_run
from autoslim.search.targets import parse_targets

SEARCHES = {
    "batch2048": dict(eval_batch=2048, slice_size=1024, confidence=None),
    "all": dict(slice_size=512, confidence=None),
    "all-bound": dict(slice_size=1024, confidence=3.0, indifference=0.0),
    "plain": dict(reuse=False),
    "all-bound-512": dict(slice_size=512, confidence=3.0, indifference=0.0),
    "all-bound-512-2se": dict(slice_size=512, confidence=2.0, indifference=0.0),
    "default": dict(),
}


def _search(job):
    """One search of the benchmark: (its name, its SearchResult, the seconds the call took)."""
    run, signal, threads, flops, name, out = job
    torch.set_num_threads(threads)
    settings = SearchSettings(run=run, signal=signal, device="cpu", **SEARCHES[name])
    started = time.perf_counter()
    result = search_run(settings, out, parse_targets(flops, []))
    return name, result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a supernet training run directory")
    parser.add_argument("--flops", action="append", help="MACs target, repeatable (default 20M)")
    parser.add_argument("--signal", default="kl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="batch2048,all,default", help="comma-separated searches to run")
    parser.add_argument("--out", type=Path, help="keep each search in OUT/NAME (default: a temporary folder)")
    parser.add_argument("--parallel", action="store_true", help="run the searches at the same time, one process each")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in SEARCHES]
    if unknown:
        parser.error(f"unknown searches {unknown}: choose from {', '.join(SEARCHES)}")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        jobs = [(args.run, args.signal, args.threads, args.flops or ["20M"], name, (args.out or Path(scratch)) / name)
                for name in names]
        if args.parallel:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
                done = list(pool.map(_search, jobs))
        else:
            done = map(_search, jobs)
        for name, result, command in done:
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
    bounded = "default"
    if "all" in results and bounded in results:
        same = [s.config for s in results["all"].steps] == [s.config for s in results[bounded].steps]
        print(f"{bounded} made the same choices as all: {same}")
        if not same:
            first = next(i for i, (a, b) in enumerate(zip(results["all"].steps, results[bounded].steps))
                         if a.config != b.config)
            print(f"  first difference at step {first}")

if __name__ == "__main__":
    main()
