"""Time of the analytic cost model per config (issue 2: well under 1 ms for mobilenet_v2).

    python benchmarks/bench_cost.py [--spaces mobilenet_v2 resnet50 ...] [--configs 2000]

For each space: the median and 99th percentile over random configs of ``supernet.cost(config)``, which
validates the config and sums integer products over the traced layer calls. Figures, not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from autoslim.spaces import build_supernet, list_spaces, load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="*", default=list_spaces())
    parser.add_argument("--configs", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'space':<20}{'units':>6}{'calls':>7}{'median us':>11}{'p99 us':>9}")
    for name in args.spaces:
        supernet = build_supernet(load_space(name))
        rng = random.Random(0)
        configs = [supernet.sample_config(rng) for _ in range(args.configs)]
        times = []
        for config in configs:
            started = time.perf_counter()
            supernet.cost(config)
            times.append(time.perf_counter() - started)
        times.sort()
        print(f"{name:<20}{len(supernet.slimmable_units):>6}{len(supernet.trace.calls):>7}"
              f"{statistics.median(times) * 1e6:>11.1f}{times[int(0.99 * len(times))] * 1e6:>9.1f}")


if __name__ == "__main__":
    main()
