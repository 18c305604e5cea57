"""Score saved latency models against the held-out timings of ``latency_retest.py``.

``bench_latency.py --models DIR`` saves each model it builds; ``latency_retest.py --json FILE`` times the same
held-out networks three times (alone, beside the fit networks, alone again). This script predicts those networks
with every model given and prints, per model, Spearman's correlation and the median error against each of the three
timings and against their mean (each timing divided by its median first, so that a level shift between timings does
not weigh; the error is then against the first timing's level). The timings' own agreement is the ceiling a model
is read against: a model that ranks a quiet timing at 0.96 and a noisy one at 0.87 is not what changed.

    python benchmarks/score_latency_models.py RETEST_JSON MODEL_JSON... [--space S --width-mult W | --run RUN]

Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from bench_latency import add_source_arguments, load_supernet  # this script's folder

from autoslim.latency import LatencyModel, spearman

TIMINGS = (("held-out", "alone"), ("both", "beside the fit networks"), ("held-out again", "alone again"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("retest", help="a latency_retest.py --json file")
    parser.add_argument("models", nargs="+", help="latency models saved by bench_latency.py --models")
    add_source_arguments(parser)
    args = parser.parse_args()

    supernet, _ = load_supernet(args)
    retest = json.loads(Path(args.retest).read_text())
    fit_count, held = len(retest["configs"]["fit"]), retest["configs"]["held-out"]
    timings = []
    for name, _ in TIMINGS:
        least = np.array([min(r) for r in retest["rounds"][name]])
        timings.append(least[fit_count:] if name == "both" else least)
    first_level = float(np.median(timings[0]))
    mean = sum(t / np.median(t) for t in timings) / len(timings) * first_level
    print(f"{args.retest}: {len(held)} held-out networks, {timings[0].min():.3f}-{timings[0].max():.3f} ms; the "
          f"timings' own agreement (Spearman): 1~2 {spearman(timings[0], timings[1]):.3f}, 1~3 "
          f"{spearman(timings[0], timings[2]):.3f}, 2~3 {spearman(timings[1], timings[2]):.3f}")
    header = " | ".join(f"timing {i + 1} ({what})" for i, (_, what) in enumerate(TIMINGS))
    print(f"| model | built | {header} | mean of the three |")
    print("|---|---|" + "---|" * (len(TIMINGS) + 1))
    for path in args.models:
        model = LatencyModel.from_dict(json.loads(Path(path).read_text()), source=path)
        predict = model.bind(supernet)
        predicted = np.array([predict(config) for config in held])
        cells = [f"{spearman(predicted, t):.3f}, {100 * statistics.median(abs(predicted / t - 1)):.1f}%"
                 for t in timings + [mean]]
        print(f"| {path} | {model.created} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
