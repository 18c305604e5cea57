"""Sorted against unsorted channel prefixes of a trained network (issue 21, part 1). Usage:
python prefix_table.py WEIGHTS OUT.csv [--data data/cifar10.npz] [--fractions 1 0.75 0.5 0.25] [--calibration 20]

WEIGHTS is a trained resnet20_cifar (a weights file or a retrain directory). The supernet whose largest config is
that network is built three times: with its channels as trained (unsorted), ordered by L1 magnitude (what
``train-supernet --init`` does) and by Taylor importance (gradients of 4 training batches). For every fraction f,
each unit keeps its largest choice at or under f times its trained count (the same config for all three), the
network is cut out with BatchNorm recalibrated on ``--calibration`` augmented training batches of 128 (the same
batches for all; augmented as autoslim recalibrates), and its test accuracy is measured. At f = 1 the three must
agree (sorting keeps the function). It also prints the trained network's accuracy with its own running statistics
and with statistics recalibrated on clean (not augmented) training batches.

Writes OUT.csv: fraction, macs, params, unsorted, magnitude, taylor (test accuracy in percent), and prints the
markdown table.
"""

import argparse
import csv
from pathlib import Path

import torch

from autoslim.data import load_dataset
from autoslim.network.ordering import sort_channels
from autoslim.network.widths import load_weights, narrow, widths_of
from autoslim.spaces import build_supernet, load_space
from autoslim.training.calibrate import evaluate
from autoslim.training.warm_start import sliced_network
from autoslim.weights import read_weights


def trained_supernet(path: str):
    """The supernet of resnet20_cifar whose largest config is the network at ``path``, channels as trained."""
    space = load_space("resnet20_cifar")
    weights, file = read_weights(path)
    supernet = build_supernet(space, num_classes=10, input_size=32)
    widths = widths_of(supernet, weights, where=str(file), what="resnet20_cifar", hint="")
    if widths != supernet.largest_config():
        supernet = narrow(supernet, widths, groups=space.groups, divisor=space.divisor, min_ratio=space.min_ratio)
    load_weights(supernet, weights, where=str(file), what="resnet20_cifar")
    return supernet.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", default="data/cifar10.npz")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--calibration", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("cifar10", data_dir=args.data, seed=0)
    generator = torch.Generator().manual_seed(0)
    calibration = list(data.batches("train", 128, shuffle=True, augment=True, generator=generator))
    calibration = calibration[:max(args.calibration, 4)]
    clean = list(data.batches("train", 128, shuffle=True, generator=generator))[:args.calibration]
    supernets = {"unsorted": trained_supernet(args.weights), "magnitude": trained_supernet(args.weights),
                 "taylor": trained_supernet(args.weights)}
    sort_channels(supernets["magnitude"])
    sort_channels(supernets["taylor"], importance="taylor", batches=calibration[:4])
    largest = supernets["unsorted"].largest_config()
    choices = {u.name: sorted(u.choices) for u in supernets["unsorted"].slimmable_units}
    trained = trained_supernet(args.weights)
    with torch.no_grad():
        own = evaluate(trained.eval(), data.batches("test", 1000))[0]
        recalibrated = evaluate(sliced_network(trained, largest, iter(clean), args.calibration).eval(),
                                data.batches("test", 1000))[0]
    print(f"the trained network: {100 * own:.2f} % with its running statistics, {100 * recalibrated:.2f} % with "
          f"statistics of {args.calibration} clean training batches", flush=True)
    rows = []
    for fraction in args.fractions:
        config = dict(largest)
        for name, ladder in choices.items():
            fitting = [c for c in ladder if c <= fraction * largest[name] + 1e-9]
            config[name] = fitting[-1] if fitting else ladder[0]
        cost = supernets["unsorted"].cost(config)
        row = {"fraction": fraction, "macs": cost.macs, "params": cost.params}
        for name, supernet in supernets.items():
            network = sliced_network(supernet, config, iter(calibration), args.calibration).eval()
            with torch.no_grad():
                accuracy, _ = evaluate(network, data.batches("test", 1000))
            row[name] = round(100 * accuracy, 2)
        rows.append(row)
        print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| fraction of each unit | MACs | params | unsorted | magnitude (L1) | Taylor |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fraction']:g} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e3:.1f}k | {r['unsorted']:.2f} | "
              f"{r['magnitude']:.2f} | {r['taylor']:.2f} |")


if __name__ == "__main__":
    main()
