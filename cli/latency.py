"""``autoslim latency``: measure (or show) the latency model of a supernet run on a device and runtime."""

from __future__ import annotations

import click

__all__ = ["latency", "print_comparison"]


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--runtime", default="torch", show_default=True,
              help="torch (the TorchScript file export-config --model writes) or onnxruntime (its --onnx file; "
                   "pip install 'autoslim[onnx]').")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size of every timing.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads the runtime may use.")
@click.option("--networks", type=click.IntRange(min=3), default=24, show_default=True,
              help="Whole networks timed to fit the model.")
@click.option("--rebuild", is_flag=True, help="Measure again even if RUN/latency/ holds a model of this machine.")
@click.option("--check", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Then time N random networks the model has not seen, whole, and print how well it predicts them "
                   "(0: no check). Run it on an otherwise idle machine.")
def latency(run_dir, device, runtime, batch, threads, networks, rebuild, check) -> None:
    """Measure the latency model of the supernet trained in RUN, and cache it in RUN/latency/.

    Every conv and linear call is timed alone at each channel count it can take, then whole static networks,
    exported as the runtime runs them, are timed to fit the model (interleaved rounds of a warm-up and a median of
    repeats, each one's fastest round kept; pinned threads).
    `autoslim search RUN --latency 3ms` uses the cached model (and measures one if there is none). A model
    measured on another CPU, GPU or torch/runtime version is measured again. `--check 30` then times 30 random
    networks it was not fitted on and prints Spearman's rank correlation and the median error of its predictions.
    """
    from autoslim.budget import format_ms
    from autoslim.checkpoint import load_run
    from autoslim.latency import LatencyKey, latency_model
    from cli.console import console, progress, table

    if 0 < check < 3:
        raise ValueError(f"--check needs at least 3 networks (or 0 for none), got {check}")
    key = LatencyKey(device, runtime, batch, threads)
    run = load_run(run_dir, device="cpu")
    bar = progress()
    state = {}

    def on_progress(done, total, what):
        if "task" not in state:
            console.print(f"measuring the latency model of {run_dir} on {key.describe()}")
            bar.start()
            state["task"] = bar.add_task("latency model", total=total, info="")
        bar.update(state["task"], completed=done, info=what)

    try:
        found = latency_model(run.path, run.supernet, key, networks=networks, rebuild=rebuild, on_progress=on_progress)
    finally:
        bar.stop()
    model = found.model
    errors = sorted(abs(e) for e in model.fit_errors())
    coefficients = model.coefficients
    outliers = sum(bool(n.get("outlier")) for n in model.networks)
    left_out = f" ({outliers} left out as interrupted timings)" if outliers else ""
    console.print(f"{found.path}: {found.status}; {key.describe()} on {model.description.get('cpu')} "
                  f"(torch {model.description.get('torch')}), measured {model.created} in {model.seconds:.0f} s")
    console.print(f"{len(model.layers)} layer calls looked up, {len(model.networks)} whole networks fitted: latency = "
                  f"{coefficients['lookup']:.3g} x lookup + {coefficients['activations']:.3g} ms per million "
                  f"activations + {coefficients['macs']:.3g} ms per million MACs + {coefficients['intercept']:.3g} ms; "
                  f"median |error| on the fitted networks "
                  f"{100 * errors[len(errors) // 2]:.1f}%, largest {100 * errors[-1]:.1f}%{left_out}")
    rows = [[name, format_ms(n["measured_ms"]), format_ms(n["predicted_ms"]),
             f"{100 * (n['predicted_ms'] / n['measured_ms'] - 1):+.1f}%"]
            for name, n in zip(("largest", "smallest"), model.networks)]
    console.print(table("the extremes of the fit", ["config", "measured", "predicted", "error"], rows,
                        justify_right={"measured", "predicted", "error"}))
    if not check:
        console.print(f"check it on networks it has not seen: autoslim latency {run_dir} --check 30")
        return
    _check(model, run.supernet, key, check)


def _check(model, supernet, key, count: int) -> None:
    """Time ``count`` networks the model has not seen and print how well it predicts them."""
    from autoslim.budget import format_ms
    from autoslim.latency import check_model, make_timer
    from cli.console import console, warn

    console.print(f"timing {count} random networks the model has not seen, and the full network, whole ...")
    found = check_model(model, supernet, make_timer(key), count)
    measured = found.measured_ms
    console.print(f"on {len(measured)} networks it has not seen ({format_ms(min(measured))} to "
                  f"{format_ms(max(measured))}): Spearman {found.spearman:.3f}, median |error| "
                  f"{100 * found.median_error:.1f}% (90th percentile {100 * found.p90_error:.1f}%)")
    if found.drift is not None and found.drift.warning:
        warn(found.drift.warning)


def print_comparison(comparison, title: str) -> None:
    """A measured latency beside the uniform networks and the full network, and a one-line warning when the
    searched network is not faster than the uniform network of equal MACs."""
    from autoslim.budget import format_count, format_ms
    from cli.console import console, table, warn

    rows = [[m.name, format_count(m.macs), format_count(m.params), format_ms(m.measured_ms),
             f"{m.measured_ms / comparison.full.measured_ms:.2f}x"] for m in comparison.rows()]
    console.print(table(title, ["network", "MACs", "params", "measured", "of full"], rows,
                        justify_right={"MACs", "params", "measured", "of full"}))
    if comparison.warning:
        warn(comparison.warning)
