"""Supernet training step against the static network of the same config (issue 3, "Done means").

For each space and config: one training step (zero_grad, forward, cross-entropy, backward, optimizer step) of
the supernet set to the config, against the same step of ``materialize(supernet, config)`` on the same
batch, each with the optimizer the trainer uses (:func:`autoslim.training.optim.build_optimizer`). The steps run
in strictly alternating pairs (which one goes first alternates too) and the figure is the median of the
per-pair ratios. "fastest" is the ratio of the two fastest steps, steadier where other jobs share the
machine; the control row times the static step against a copy of itself (the noise floor). The optimizer
step is timed separately as well: the supernet's runs over the full-size parameters whatever the config.

Then a whole sandwich step (largest, smallest and two random configs, in-place distillation, one optimizer
step) against the sum of the steps of its four static subnets.

    python benchmarks/bench_train_step.py [--spaces resnet20_cifar mobilenet_v2_cifar] [--threads 2]

Targets: at most 1.03 for the worst config, at most 1.05 for the sandwich. Figures, not a test. With the
defaults it takes about half an hour on two CPU cores (MobileNetV2's steps at batch 128 take seconds); give
it an otherwise idle machine, or use ``--threads 1`` where other jobs run (OpenMP threads that share a core
with another process spin and make every figure noise).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autoslim.devices import keep_freed_memory
from autoslim.network.static import materialize
from autoslim.network.supernet import Supernet
from autoslim.spaces import build_supernet, load_space
from autoslim.training.optim import build_optimizer
from autoslim.training.sandwich import sandwich_configs, sandwich_step, subnet_rng
from autoslim.training.settings import resolve_settings


_clock = time.perf_counter


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One plain training step; returns the seconds of its optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    start = _clock()
    optimizer.step()
    return _clock() - start


def _timed(fn: Callable[[], object]) -> float:
    start = _clock()
    fn()
    return _clock() - start


def _pairs(first: Callable[[], object], second: Callable[[], object], budget: float, lo: int, hi: int
           ) -> tuple[list[float], float]:
    """Ratios first/second over alternating pairs (as many as fit ``budget`` seconds, within lo..hi), and the
    ratio of the two fastest times (steadier where other jobs share the machine)."""
    for _ in range(2):  # warm-up: allocator, oneDNN primitives of these shapes
        first()
        second()
    estimate = _timed(first) + _timed(second)
    count = max(lo, min(hi, int(budget / max(estimate, 1e-6))))
    ratios, fastest = [], [math.inf, math.inf]
    for i in range(count):
        if i % 2 == 0:
            a = _timed(first)
            b = _timed(second)
        else:
            b = _timed(second)
            a = _timed(first)
        ratios.append(a / b)
        fastest = [min(fastest[0], a), min(fastest[1], b)]
    return ratios, fastest[0] / fastest[1]


def _configs(supernet: Supernet, count: int, seed: int) -> list[tuple[str, dict[str, int]]]:
    """The smallest and largest configs, random ones, and random ones from the lower half of each unit's choices."""
    rng = random.Random(seed)
    configs = [("smallest", supernet.smallest_config())]
    for i in range(max(0, count - 2)):
        if i % 2 == 0:
            config = {u.name: rng.choice(u.choices[: max(1, len(u.choices) // 2)]) for u in supernet.slimmable_units}
            configs.append((f"small random {i // 2 + 1}", config))
        else:
            configs.append((f"random {i // 2 + 1}", supernet.sample_config(rng)))
    configs.append(("largest", supernet.largest_config()))
    return configs


def bench_space(name: str, args: argparse.Namespace) -> None:
    space = load_space(name)
    torch.manual_seed(0)
    supernet = build_supernet(space)
    supernet.train()
    settings = resolve_settings(space, lr=args.lr)
    batch_size = args.batch_size or settings.batch_size
    x = torch.randn(batch_size, space.in_channels, space.input_size, space.input_size)
    y = torch.randint(0, space.num_classes, (batch_size,))
    full = supernet.cost()
    print(f"\n{name}: batch {batch_size}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"largest {full.macs / 1e6:.1f}M MACs, {full.params / 1e6:.2f}M params")
    print(f"{'config':<16} {'MACs':>8} {'static ms':>10} {'ratio':>7} {'p25':>6} {'p75':>6} {'fastest':>8} "
          f"{'opt super':>10} {'opt static':>10} {'pairs':>5}")
    worst = 0.0
    super_optimizer = build_optimizer(supernet, settings)
    for label, config in _configs(supernet, args.configs, args.seed):
        static = materialize(supernet, config).train()
        supernet.set_config(config)
        static_optimizer = build_optimizer(static, settings)
        opt_times: dict[str, list[float]] = {"super": [], "static": []}

        def run_super():
            opt_times["super"].append(_step(supernet, super_optimizer, x, y))

        def run_static():
            opt_times["static"].append(_step(static, static_optimizer, x, y))

        ratios, fastest = _pairs(run_super, run_static, args.seconds, args.min_pairs, args.max_pairs)
        static_ms = statistics.median(_timed(run_static) for _ in range(3)) * 1e3
        q = statistics.quantiles(ratios, n=4)
        median = statistics.median(ratios)
        worst = max(worst, median)
        print(f"{label:<16} {supernet.cost(config).macs / 1e6:>7.1f}M {static_ms:>10.1f} {median:>7.3f} {q[0]:>6.3f} "
              f"{q[2]:>6.3f} {fastest:>8.3f} {statistics.median(opt_times['super']) * 1e3:>8.2f}ms "
              f"{statistics.median(opt_times['static']) * 1e3:>8.2f}ms {len(ratios):>5}")
    print(f"worst config: {worst:.3f} (target <= 1.03)")
    if args.control:  # the same static step against a copy of itself: the noise floor of these figures
        config = supernet.smallest_config()
        first, second = (materialize(supernet, config).train() for _ in range(2))
        optimizers = [build_optimizer(m, settings) for m in (first, second)]
        ratios, fastest = _pairs(lambda: _step(first, optimizers[0], x, y), lambda: _step(second, optimizers[1], x, y),
                                 args.seconds, args.min_pairs, args.max_pairs)
        q = statistics.quantiles(ratios, n=4)
        print(f"control, static vs its copy (smallest): {statistics.median(ratios):.3f} "
              f"[p25 {q[0]:.3f}, p75 {q[2]:.3f}, fastest {fastest:.3f}, {len(ratios)} pairs]")

    for draw in range(args.sandwiches):
        configs = sandwich_configs(supernet, 4, subnet_rng(args.seed, 0, draw))
        statics = [materialize(supernet, c).train() for c in configs]
        static_optimizers = [build_optimizer(s, settings) for s in statics]

        def run_sandwich():
            super_optimizer.zero_grad(set_to_none=True)
            sandwich_step(supernet, supernet, configs, x, y, label_smoothing=settings.label_smoothing)
            super_optimizer.step()

        def run_statics():
            for model, optimizer in zip(statics, static_optimizers):
                _step(model, optimizer, x, y)

        ratios, fastest = _pairs(run_sandwich, run_statics, args.seconds, args.min_pairs, args.max_pairs)
        q = statistics.quantiles(ratios, n=4)
        macs = "+".join(f"{supernet.cost(c).macs / 1e6:.0f}" for c in configs)
        print(f"sandwich {draw + 1} ({macs}M MACs): {statistics.median(ratios):.3f} "
              f"[p25 {q[0]:.3f}, p75 {q[2]:.3f}, fastest {fastest:.3f}, {len(ratios)} pairs] (target <= 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["resnet20_cifar", "mobilenet_v2_cifar"])
    parser.add_argument("--batch-size", type=int, help="default: the space's recipe (128 for the CIFAR spaces)")
    parser.add_argument("--configs", type=int, default=6, help="configs per space, smallest and largest included")
    parser.add_argument("--sandwiches", type=int, default=2, help="sandwich draws per space")
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per config")
    parser.add_argument("--min-pairs", type=int, default=15)
    parser.add_argument("--max-pairs", type=int, default=101)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc-default", dest="keep_freed_memory", action="store_false",
                        help="leave glibc's malloc at its defaults (train-supernet keeps freed memory on the CPU)")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the static-vs-static control that shows the noise floor")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time, steadier on a machine shared with other jobs (use --threads 1)")
    args = parser.parse_args()
    global _clock
    _clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:  # as train-supernet does on the CPU; applies to both models alike
        keep_freed_memory()
    for name in args.spaces:
        bench_space(name, args)


if __name__ == "__main__":
    main()
