"""``autoslim search``: greedy slimming of a trained supernet, one config per budget."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["search"]


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--flops", multiple=True, metavar="BUDGET", help="MACs target (300M, 1.2G, 3e8); repeatable.")
@click.option("--params", multiple=True, metavar="BUDGET", help="Parameter target (2M, 450k); repeatable.")
@click.option("--latency", multiple=True, metavar="TIME",
              help="Latency target (3ms, 800us) on --latency-device with --runtime, --latency-batch and --threads, "
                   "predicted by the run's latency model (measured first if RUN/latency/ has none); repeatable.")
@click.option("--latency-device", default="cpu", show_default=True, help="Device of latency targets: cpu or cuda.")
@click.option("--runtime", default="torch", show_default=True,
              help="Runtime of latency targets: torch (TorchScript, as export-config --model writes) or onnxruntime.")
@click.option("--latency-batch", type=int, default=1, show_default=True, help="Batch size of latency targets.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads of latency targets.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="SEARCH directory [default: RUN/search].")
@click.option("--criterion", type=click.Choice(["drop-per-cost", "accuracy", "drop-per-mac"]), default="drop-per-cost",
              show_default=True,
              help="drop-per-cost: the least --signal lost per unit of the targeted cost saved (MACs for --flops, "
                   "parameters for --params), steps that lose nothing first. accuracy: the paper's rule, the highest "
                   "held-out accuracy whatever the step saves. drop-per-mac: top-1 lost per MAC saved (autoslim 0.x).")
@click.option("--signal", type=click.Choice(["kl", "top1", "ce"]), default="kl", show_default=True,
              help="What drop-per-cost measures: KL divergence from the largest config's predictions, top-1 accuracy "
                   "or cross-entropy.")
@click.option("--eval-batch", type=click.IntRange(min=1), metavar="N",
              help="Held-out images scored [default: all of the held-out split].")
@click.option("--slice", "slice_size", type=click.IntRange(min=0), default=512, show_default=True,
              help="At most this many images per forward pass, BatchNorm using each slice's statistics; 0 scores "
                   "--eval-batch as one batch (autoslim 0.x; no KL).")
@click.option("--bound", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="SE",
              help="A candidate that loses more per unit saved than the leader, by SE standard errors of their "
                   "per-image difference, is not scored on the remaining slices; 0 scores every candidate on every "
                   "image.")
@click.option("--indifference", type=click.FloatRange(min=0, max=1, max_open=True), default=0.1, show_default=True,
              metavar="FRACTION",
              help="With --bound, a candidate that cannot beat the leader by more than this fraction of the leader's "
                   "loss per unit saved is not scored on the remaining slices either: near-ties are not split; 0 "
                   "drops only candidates that cannot win.")
@click.option("--exhaustive", is_flag=True, help="Score every candidate on every image (--bound 0).")
@click.option("--calibration-batches", type=click.IntRange(min=0), default=0, show_default=True,
              help="Recalibrate BatchNorm on K training batches per candidate instead of batch statistics.")
@click.option("--to-smallest", is_flag=True, help="Slim all the way to the smallest config.")
@click.option("--no-reuse", is_flag=True, help="Score every candidate from the input (the plain greedy loop).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--data-dir", type=click.Path(), help="Where the run's data lives now (default: as in training).")
@click.option("--force", is_flag=True, help="Start over in an --out holding a search of other settings.")
def search(run_dir, flops, params, latency, latency_device, runtime, latency_batch, threads, out_dir, criterion, signal,
           eval_batch, slice_size, bound, indifference, exhaustive, calibration_batches, to_smallest, no_reuse, device, data_dir,
           force) -> None:
    """Slim the supernet trained in RUN greedily and write a config for every budget.

    Starting at the largest config, each step shrinks by one choice the unit whose removal loses the least
    held-out signal per unit of cost saved (by default: the KL divergence from the largest config's predictions,
    on every held-out image, per MAC for --flops, per millisecond of predicted latency for --latency). Every step
    is appended to SEARCH/trajectory.csv as it is made; re-running into the same SEARCH resumes. Latency picks are
    measured as whole networks at the end. MACs are those of conv and linear layers (the paper's "FLOPs").
    """
    from autoslim.budget import format_count, format_ms
    from autoslim.search.runner import SearchSettings, search_run
    from autoslim.search.targets import parse_targets
    from cli.console import console, progress, table, warn

    targets = parse_targets(flops, params, latency)
    settings = SearchSettings(run=str(run_dir), targets=tuple(t.label for t in targets), criterion=criterion,
                              signal=signal, eval_batch=eval_batch, slice_size=slice_size or None,
                              confidence=None if exhaustive or not bound else bound,
                              indifference=indifference, calibration_batches=calibration_batches,
                              reuse=not no_reuse, to_smallest=to_smallest, device=device, latency_device=latency_device,
                              runtime=runtime, latency_batch=latency_batch, threads=threads)
    out = Path(out_dir) if out_dir else Path(run_dir) / "search"
    bar = progress()
    state = {}

    def on_latency(done, total, what):
        if "latency" not in state:
            bar.start()
            console.print(f"measuring the latency model on {settings.latency_key.describe()} "
                          f"(cached in {Path(run_dir) / 'latency'})")
            state["latency"] = bar.add_task("latency model", total=total, info="")
        bar.update(state["latency"], completed=done, info=what)

    def on_start(facts):
        largest, smallest = facts["largest"], facts["smallest"]
        if facts["stop_latency"] is not None:  # progress in microseconds of predicted latency
            begin, end = (round(v * 1e3) for v in facts["latency"])
            floor = round(facts["stop_latency"] * 1e3)
            state.update(start=begin, floor=max(end, floor), of=lambda step: round(step.latency_ms * 1e3))
            span = f"{format_ms(facts['latency'][0])} -> {format_ms(facts['stop_latency'])} predicted"
        else:
            floor = facts["stop_macs"] if facts["stop_macs"] is not None else smallest.macs
            state.update(start=largest.macs, floor=floor, of=lambda step: step.macs)
            span = f"{format_count(largest.macs)} -> {format_count(floor)} MACs"
        bar.start()
        state["task"] = bar.add_task("search", total=max(1, state["start"] - state["floor"]), info="")
        if facts["resumed"]:
            console.print(f"resuming {out}: {facts['resumed']} trajectory points already made")
        console.print(f"scoring on {facts['batch']} held-out images; {facts['candidates']} units can shrink; {span}")

    def on_step(step):
        done = min(state["start"] - state["floor"], max(0, state["start"] - state["of"](step)))
        latency_info = "" if step.latency_ms is None else f"  {format_ms(step.latency_ms)}"
        bar.update(state["task"], completed=done,
                   info=f"step {step.step}  {step.candidates} candidates  {format_count(step.macs)} MACs{latency_info}  "
                        f"acc {step.accuracy:.3f}")

    try:
        result = search_run(settings, out, targets, data_dir=data_dir, force=force, on_start=on_start, on_step=on_step,
                            on_latency=on_latency)
    finally:
        bar.stop()
    if result.latency is not None:
        model = result.latency
        console.print(f"latency model: {model['model']} ({model['status']}); {model['described']} on "
                      f"{model['description'].get('cpu')}")
    rows = []
    for label, step in result.picks.items():
        base = result.baselines.get(label) or {}
        row = [label, step.step, format_count(step.macs), format_count(step.params), f"{step.accuracy:.4f}"]
        if result.latency is not None:
            measured = result.measured[label]
            row += [format_ms(measured["predicted_ms"]), format_ms(measured["measured_ms"])]
        row += [f"{base['width']:g}x" if base else "-", format_count(base["macs"]) if base else "-",
                f"{base['accuracy']:.4f}" if base else "-"]
        if result.latency is not None:
            row.append(format_ms(base["latency"]["measured_ms"]) if base else "-")
        rows.append(row + [f"configs/{label}.yaml"])
    columns = ["target", "step", "MACs", "params", "accuracy"]
    if result.latency is not None:
        columns += ["predicted", "measured"]
    columns += ["uniform", "uniform MACs", "uniform acc"] + (["uniform measured"] if result.latency else []) + ["config"]
    console.print(table(f"{out}: {len(result.steps) - 1} steps, {result.work['seconds']:.1f} s", columns, rows,
                        justify_right=set(columns) - {"target", "uniform", "config"}))
    drift = (result.latency or {}).get("drift") or {}
    if drift.get("warning"):
        warn(drift["warning"])
    console.print(f"Pareto plot: {out / 'pareto.png'}  (accuracy on the held-out search batch)")
    console.print(f"Each step chosen by {result.summary['decided_by']}.")
    leads = result.summary.get("choices")
    if leads:
        console.print(f"The best candidate led the runner-up by a median of {leads['median_images']:g} of "
                      f"{result.work['batch']:,} held-out images; {leads['ties']} of {leads['steps']} steps were "
                      f"ties (the loss decided), {leads['within_1pct']} within 1% of the images.")
        if leads["within_1pct"] * 2 > leads["steps"]:
            console.print("Most choices turn on a few images: a larger --eval-batch (up to the held-out split) "
                          "makes them less noisy.")
