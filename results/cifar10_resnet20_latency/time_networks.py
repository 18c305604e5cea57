"""Time the latency pick and every uniform network retrained in results/cifar10_resnet20, side by side. Usage:
python time_networks.py SUPERNET_RUN RUNS OUT.csv [--rounds 5]

Every network is a static network cut from SUPERNET_RUN with the channels its retraining recorded (a retrained
network's own weights do not change its latency), exported and timed as ``autoslim search --latency`` times it
(TorchScript, CPU, batch 1, one thread): all together in ``--rounds`` interleaved rounds, each a warm-up and the
median of 31 runs, and each network's latency is its least round (a slow stretch of the machine slows whole rounds).
Writes OUT.csv: name, width (uniform networks), macs, params, latency_ms, rounds_ms.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from autoslim.channel_config import load_config
from autoslim.checkpoint import load_run
from autoslim.latency import LatencyKey, TimingSettings, make_timer
from autoslim.network.static import materialize

SCRATCH = Path(__file__).resolve().parents[1] / "cifar10_resnet20"


def networks(runs: Path) -> dict[str, dict]:
    """name -> {width, channels}: every pick of the latency search and every retrained uniform width."""
    found = {}
    for path in sorted((runs / "search" / "configs").glob("latency-*.yaml")):
        found[path.stem] = {"width": None, "channels": dict(load_config(path).channels)}
    summaries = [json.loads(p.read_text())["baseline"] for p in sorted(SCRATCH.glob("retrain/flops-*/seed0.json"))]
    summaries += [json.loads(p.read_text()) for p in sorted(SCRATCH.glob("bracket/uniform-*x/seed0.json"))]
    for summary in summaries:
        width = summary.get("width") or float(Path(summary["config"]).stem.split("-")[1][:-1])
        found.setdefault(f"uniform {width}x", {"width": width, "channels": summary["channels"]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    supernet = load_run(args.run).supernet
    timer = make_timer(LatencyKey("cpu", "torch", 1, 1), TimingSettings(repeats=31, rounds=args.rounds))
    nets = networks(args.runs)
    if not nets:
        sys.exit("no networks to time: run the search stage first")
    shape = (1, supernet.in_channels, supernet.input_size, supernet.input_size)
    timed = timer.network_rounds([materialize(supernet, supernet.validate_config(net["channels"]))
                                  for net in nets.values()], shape)
    rounds = dict(zip(nets, timed))
    for name, values in rounds.items():
        print(f"{name}: " + " ".join(f"{v:.3f}" for v in values) + " ms", flush=True)
    rows = []
    for name, net in nets.items():
        cost = supernet.cost(net["channels"])
        rows.append({"name": name, "width": net["width"] or "", "macs": cost.macs, "params": cost.params,
                     "latency_ms": round(min(rounds[name]), 4),
                     "rounds_ms": " ".join(f"{v:.4f}" for v in rounds[name])})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args.out.with_suffix(".tmp").replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
