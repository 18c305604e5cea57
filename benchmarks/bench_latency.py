"""Accuracy of the latency model: predicted against measured latency of whole static networks it has not seen.

For every runtime and batch size asked for, the script measures a latency model of the supernet (as ``autoslim
latency`` does, timing its own build), then draws ``--held-out`` random configs that are not among the model's fit
networks (each unit's choice uniform, as ``sample_config``; ``--spread`` draws half of them around a random overall
width instead), exports and times each whole network, and prints per runtime and batch:

- Spearman's rank correlation of predicted and measured latency (target >= 0.95),
- the median and 90th percentile of the absolute relative error (target: median <= 10%),
- the same two figures for a fit of latency on MACs alone (``a * MACs + c`` on the same fit networks), i.e. what
  the per-layer model adds over the MAC count,
- the build time of the model and the measured range,
- the level: the full network timed beside the held-out networks over its time in the model's fit (1.15: the
  machine ran 15% slower than while the model was measured, minutes earlier), and the median error of the
  predictions scaled by it. The targets are judged on the unscaled error; the scaled one says how much of it is the
  machine's drift rather than the model.

    python benchmarks/bench_latency.py [--space resnet20_cifar [--width-mult 1.0] | --run RUN]
        [--runtimes torch onnxruntime] [--batches 1 32] [--threads 1] [--networks 24] [--held-out 30]
        [--json results/latency.json] [--models DIR]

``--again JSON`` times the held-out networks of an earlier ``--json`` once more and prints how well the two timings
agree (Spearman, median difference): no model can rank the networks better than their timings repeat.

Timings are taken as the library takes them (the held-out networks timed together in ``--rounds`` interleaved rounds,
each a warm-up and the median of ``--repeats``, the least round kept; pinned threads; the network exported as the
user runs it: TorchScript for torch, the ONNX file for onnxruntime); run it on an otherwise idle machine. Figures,
not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np
import torch

from autoslim.latency import (LatencyKey, TimingSettings, build_latency_model, fit_configs, make_timer, measure_configs,
                              spearman)


def errors(predicted, measured) -> list[float]:
    return [abs(p / m - 1) for p, m in zip(predicted, measured)]


def held_out_configs(supernet, count: int, exclude, seed: int, spread: bool):
    rng = random.Random(seed)
    seen = {json.dumps(c, sort_keys=True) for c in exclude}
    configs = []
    while len(configs) < count:
        if spread and len(configs) % 2:
            level = rng.random()
            config = {}
            for unit in supernet.slimmable_units:
                last = len(unit.choices) - 1
                config[unit.name] = unit.choices[min(last, max(0, round(level * last + rng.gauss(0, 0.2 * last))))]
        else:
            config = supernet.sample_config(rng)
        tag = json.dumps(config, sort_keys=True)
        if tag not in seen:
            seen.add(tag)
            configs.append(config)
    return configs


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--space``/``--width-mult`` or ``--run``: the supernet whose networks are timed (shared by the latency
    benchmarks)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--space", default="resnet20_cifar", help="a search space (untrained weights: latency does not "
                        "depend on them)")
    source.add_argument("--run", help="a supernet run directory (its trained weights)")
    parser.add_argument("--width-mult", type=float, help="with --space: the supernet's width multiplier (as "
                        "train-supernet --width-mult)")


def load_supernet(args: argparse.Namespace):
    """The supernet of :func:`add_source_arguments`' options, and a description of where it came from."""
    if getattr(args, "run", None):
        from autoslim.checkpoint import load_run

        return load_run(args.run).supernet, args.run
    from autoslim.spaces import build_supernet, configure_space, load_space

    space = configure_space(load_space(args.space), width_mult=args.width_mult)
    return build_supernet(space).eval(), f"{args.space} at {space.width_mult:g}x"


def again(supernet, settings: TimingSettings, path: str) -> None:
    """Time every held-out network of an earlier run once more, per runtime and batch, and compare the two timings."""
    earlier = json.loads(open(path).read())
    print(f"the held-out networks of {path} timed again ({settings.clock} clock, least of {settings.rounds} "
          f"interleaved rounds' {settings.statistic} of {settings.repeats} repeats)")
    print("| runtime | batch | threads | Spearman of the two timings | median difference | p90 difference |")
    print("|---|---|---|---|---|---|")
    for row in earlier["results"]:
        timer = make_timer(LatencyKey(row["device"], row["runtime"], row["batch"], row["threads"]), settings)
        first = [n["measured_ms"] for n in row["networks"]]
        second = measure_configs(supernet, [n["config"] for n in row["networks"]], timer)
        difference = errors(second, first)
        print(f"| {row['runtime']} | {row['batch']} | {row['threads']} | {spearman(first, second):.3f} | "
              f"{100 * statistics.median(difference):.1f}% | {100 * float(np.percentile(difference, 90)):.1f}% |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--networks", type=int, default=24, help="whole networks of the model's fit")
    parser.add_argument("--held-out", type=int, default=30, help="random configs the model has not seen")
    parser.add_argument("--spread", action="store_true", help="draw half the held-out configs around a random width")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=TimingSettings.rounds,
                        help="interleaved rounds per timing, the least kept (1: the median of one round)")
    parser.add_argument("--statistic", default="median", choices=["median", "min"],
                        help="median of repeats (default), or min on a machine shared with other work")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"],
                        help="wall time (default), or the CPU time of the timing thread (one thread only): checks the "
                             "model on a machine shared with other work, where wall times are not the network's")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out configs (the fit uses 0)")
    parser.add_argument("--json", help="also write every figure (and every held-out network) to this file")
    parser.add_argument("--models", metavar="DIR", help="also write each latency model built (its layer tables and fit "
                        "networks) to DIR/LABEL.json, to study other fits offline")
    parser.add_argument("--again", metavar="JSON", help="time the held-out networks of an earlier --json once more and "
                        "print how well the two timings agree: the ceiling of any model on this machine")
    args = parser.parse_args()

    supernet, source = load_supernet(args)
    settings = TimingSettings(warmup=args.warmup, repeats=args.repeats, statistic=args.statistic, clock=args.clock,
                              rounds=args.rounds)
    if args.again:
        again(supernet, settings, args.again)
        return
    print(f"{source}: {len(supernet.slimmable_units)} slimmable units; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads available; {args.networks} fit networks, {args.held_out} held-out "
          f"configs, least of {args.rounds} interleaved rounds' {args.statistic} of {args.repeats} repeats, "
          f"{args.clock} clock", flush=True)
    fit = fit_configs(supernet, args.networks, seed=0)
    configs = held_out_configs(supernet, args.held_out, fit, args.seed, args.spread)
    macs = [supernet.cost(c).macs for c in configs]
    fit_macs = [supernet.cost(c).macs for c in fit]
    results = []
    for runtime in args.runtimes:
        for batch in args.batches:
            key = LatencyKey(args.device, runtime, batch, args.threads)
            timer = make_timer(key, settings)
            began = time.perf_counter()
            model = build_latency_model(supernet, timer, networks=args.networks, seed=0)
            built = time.perf_counter() - began
            if args.models:
                from autoslim.io import write_json

                write_json(f"{args.models}/{key.label}.json", model.to_dict())
            predict = model.bind(supernet)
            predicted = [predict(config) for config in configs]
            *measured, full_now = measure_configs(supernet, configs + [supernet.largest_config()], timer)
            level = model.drift(full_now).ratio  # the machine's speed now against the model's build
            # latency on MACs alone, fitted on the same networks by relative error
            fit_ms = np.array([n["measured_ms"] for n in model.networks])
            design = np.column_stack([fit_macs, np.ones(len(fit_ms))]) / fit_ms[:, None]
            (a, c), *_ = np.linalg.lstsq(design, np.ones(len(fit_ms)), rcond=None)
            by_macs = [a * m + c for m in macs]
            error, macs_error = errors(predicted, measured), errors(by_macs, measured)
            leveled = errors([level * p for p in predicted], measured)
            row = {"runtime": runtime, "batch": batch, "threads": args.threads, "device": args.device,
                   "description": model.description, "build_seconds": built, "layer_calls": len(model.layers),
                   "fit_networks": len(model.networks), "coefficients": model.coefficients,
                   "spearman": spearman(predicted, measured),
                   "median_error": statistics.median(error), "p90_error": float(np.percentile(error, 90)),
                   "max_error": max(error), "macs_spearman": spearman(by_macs, measured),
                   "macs_median_error": statistics.median(macs_error),
                   "full_network_ms": {"model": model.full_network_ms, "held_out": full_now}, "level": level,
                   "leveled_median_error": statistics.median(leveled),
                   "measured_range_ms": [min(measured), max(measured)],
                   "networks": [{"config": c, "macs": m, "predicted_ms": p, "measured_ms": t}
                                for c, m, p, t in zip(configs, macs, predicted, measured)]}
            results.append(row)
            verdict = "meets" if row["spearman"] >= 0.95 and row["median_error"] <= 0.10 else "misses"
            print(f"{runtime:>11} batch {batch:>3}: Spearman {row['spearman']:.3f}, median |error| "
                  f"{100 * row['median_error']:.1f}% (p90 {100 * row['p90_error']:.1f}%, max "
                  f"{100 * row['max_error']:.1f}%) [{verdict} >= 0.95 / <= 10%]; the full network ran "
                  f"{level:.2f}x its time in the model (predictions scaled by it: median |error| "
                  f"{100 * row['leveled_median_error']:.1f}%); MACs alone: Spearman "
                  f"{row['macs_spearman']:.3f}, median |error| {100 * row['macs_median_error']:.1f}%; measured "
                  f"{min(measured):.3f}-{max(measured):.3f} ms; model built in {built:.0f} s ({len(model.layers)} "
                  f"layer calls, {len(model.networks)} networks; fit {model.coefficients})", flush=True)
    print()
    print("| runtime | batch | threads | Spearman | median error | p90 error | MACs alone: Spearman, median error "
          "| level (full network, held-out / model) | median error at the held-out level | build |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['runtime']} | {row['batch']} | {row['threads']} | {row['spearman']:.3f} | "
              f"{100 * row['median_error']:.1f}% | {100 * row['p90_error']:.1f}% | {row['macs_spearman']:.3f}, "
              f"{100 * row['macs_median_error']:.1f}% | {row['level']:.2f} | {100 * row['leveled_median_error']:.1f}% "
              f"| {row['build_seconds']:.0f} s |")
    if args.json:
        from autoslim.io import write_json

        write_json(args.json, {"source": source, "held_out": args.held_out, "argv": sys.argv[1:], "results": results})


if __name__ == "__main__":
    main()
