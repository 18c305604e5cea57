"""Held-out check of a latency search: time every ``configs/latency-*.yaml`` pick in a fresh process.

For each latency pick of SEARCH the script writes the pick's static network as the runtime of the search runs it
(TorchScript for ``torch``, ONNX for ``onnxruntime``), then times it in a new Python process that imports neither
autoslim nor the search (batch and threads of the search; as the library times: rounds of a warm-up and the median of
``--repeats`` runs, the least round kept), and prints the budget, the predicted latency and the one measured at the
end of the search beside the fresh measurement, and whether it is within 15% of the budget. The full network is
timed the same way first: its fresh latency over its latency in the model says how much faster or slower the machine
runs now than when the model was measured (a drift the predictions cannot know), and the last column divides it out.

    python benchmarks/check_latency_picks.py SEARCH [--rounds 10] [--repeats 40] [--space S [--width-mult W]]

``--space`` builds the supernet from its space (untrained: timings do not depend on weights) where the search's
supernet run is not on this machine; without the latency model the level is not printed.

Figures, not a test (``tests/test_cli_latency.py`` has a tolerant slow test of the same).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from autoslim.channel_config import load_config
from autoslim.checkpoint import load_run
from autoslim.export import onnx_bytes, search_run_dir, torchscript_bytes
from autoslim.latency import load_model
from autoslim.network.static import materialize

_TIMER = textwrap.dedent("""
    import statistics, sys, time, warnings
    warnings.simplefilter("ignore")
    path, runtime, shape, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rounds, repeats = int(sys.argv[5]), int(sys.argv[6])
    shape = [int(v) for v in shape.split(",")]
    if runtime == "torch":
        import torch
        torch.set_num_threads(threads)
        model = torch.jit.load(path).eval()
        x = torch.randn(*shape)
        def run():
            with torch.inference_mode():
                model(x)
    else:
        import numpy, onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: numpy.random.randn(*shape).astype("float32")}
        def run():
            session.run(None, feed)
    medians = []
    for _ in range(rounds):
        for _ in range(5):
            run()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            run()
            times.append(time.perf_counter() - began)
        medians.append(statistics.median(times) * 1e3)
    print(min(medians), max(medians))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", help="a SEARCH directory made with --latency")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=40, help="timed runs per round (their median)")
    parser.add_argument("--space", help="build the supernet from this space instead of loading the search's run")
    parser.add_argument("--width-mult", type=float, help="with --space: the supernet's width multiplier")
    args = parser.parse_args()
    search = Path(args.search)
    summary = json.loads((search / "summary.json").read_text())
    latency = summary.get("latency")
    if latency is None:
        sys.exit(f"{search} is not a latency search (its summary.json has no latency model)")
    if latency["device"] != "cpu":
        sys.exit("this check times CPU runtimes; time CUDA picks with your serving stack")
    if args.space:
        from bench_latency import load_supernet  # this script's folder

        supernet, _ = load_supernet(args)
    else:
        supernet = load_run(search_run_dir(search)).supernet
    shape = (latency["batch"], supernet.in_channels, supernet.input_size, supernet.input_size)
    print(f"{search}: {latency['described']} on {latency['description'].get('cpu')}; fresh processes, the least of "
          f"{args.rounds} rounds' medians of {args.repeats} runs (the slowest round in brackets)")
    with tempfile.TemporaryDirectory() as scratch:

        def fresh_ms(name, channels):
            static = materialize(supernet, supernet.validate_config(channels)).eval()
            example = torch.randn(shape)
            if latency["runtime"] == "torch":
                file, data = Path(scratch) / f"{name}.pt", torchscript_bytes(static, example)
            else:
                file, data = Path(scratch) / f"{name}.onnx", onnx_bytes(static, example)
            file.write_bytes(data)
            timed = subprocess.run([sys.executable, "-c", _TIMER, str(file), latency["runtime"],
                                    ",".join(map(str, shape)), str(latency["threads"]), str(args.rounds),
                                    str(args.repeats)],
                                   capture_output=True, text=True, check=True)
            return tuple(map(float, timed.stdout.strip().splitlines()[-1].split()))

        model = load_model(latency["model"]) if Path(latency["model"]).is_file() else None
        if model is not None and model.identity != latency["identity"]:
            print(f"note: {latency['model']} was measured again after the search ({model.identity}, the search used "
                  f"{latency['identity']}): the level below is against the newer model")
        full, full_slowest = fresh_ms("full", supernet.largest_config())
        if model is None:
            level = None
            print(f"the full network: {full:.3f} ms fresh ({full_slowest:.3f}); the latency model ({latency['model']}) "
                  f"is not on this machine, so no level")
        else:
            drift = model.drift(full)
            level = drift.ratio
            print(f"the full network: {full:.3f} ms fresh ({full_slowest:.3f}), {drift.then_ms:.3f} ms in the latency "
                  f"model: the machine runs {level:.2f}x the model's time now")
        print("| pick | budget | predicted | measured in search | measured fresh | fresh / budget | within 15% "
              "| fresh / budget at the model's level |")
        print("|---|---|---|---|---|---|---|---|")
        for path in sorted((search / "configs").glob("latency-*.yaml")):
            config = load_config(path)
            budget = float(config.source["target"]["latency"])
            fresh, slowest = fresh_ms(path.stem, config.channels)
            recorded = config.cost.get("latency", {})
            print(f"| {path.stem} | {budget:.3f} ms | {recorded.get('predicted_ms', float('nan')):.3f} ms | "
                  f"{recorded.get('measured_ms', float('nan')):.3f} ms | {fresh:.3f} ms ({slowest:.3f}) | "
                  f"{fresh / budget:.2f} | {'yes' if fresh <= 1.15 * budget else 'no'} | "
                  f"{'-' if level is None else f'{fresh / level / budget:.2f}'} |", flush=True)


if __name__ == "__main__":
    main()
