"""``autoslim export-config``: the config of a search at a budget or step, and the standalone network."""

from __future__ import annotations

import click

from cli.running import latency_options

__all__ = ["export_config"]


@click.command("export-config")
@click.argument("search_dir", metavar="SEARCH", type=click.Path(file_okay=False))
@click.option("--flops", metavar="BUDGET", help="MACs target (300M, 1.2G, 3e8): the first trajectory point within it.")
@click.option("--params", metavar="BUDGET", help="Parameter target (2M, 450k).")
@click.option("--latency", metavar="TIME",
              help="Latency target (3ms, 800us): the first trajectory point the run's latency model predicts within "
                   "it; the config is then measured beside the uniform networks.")
@latency_options
@click.option("--step", type=click.IntRange(min=0), help="A trajectory step instead of a target (0 = largest).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Config file to write [default: SEARCH/configs/LABEL.yaml].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Also write the static network: TorchScript (model.pt) or torch.export (model.pt2).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False),
              help="Also write it as ONNX (needs the onnx extra: pip install 'autoslim[onnx]').")
@click.option("--data-dir", type=click.Path(), help="Where the run's data lives now (default: as in training).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def export_config(search_dir, flops, params, latency, latency_device, runtime, latency_batch, threads, step, out_path,
                  model_path, onnx_path, data_dir, force) -> None:
    """Write the channel config that SEARCH found for a budget (or at a trajectory step).

    A budget takes the first trajectory point within it, whether or not the search was given it.
    --model and --onnx write the network with the supernet's weights sliced to the config and BatchNorm
    statistics recalibrated for it, loadable with plain torch / onnxruntime; each file is checked to give
    the supernet's outputs at the config before it is written. With --latency the config is measured as a whole
    network and printed beside the widest uniform network within the budget, the uniform network of equal MACs and
    the full network.
    """
    if sum(value is not None for value in (flops, params, latency, step)) != 1:
        raise click.UsageError("give exactly one of --flops, --params, --latency or --step")
    from autoslim.budget import format_count
    from autoslim.export import export_search
    from autoslim.latency import LatencyKey
    from autoslim.search.targets import parse_targets
    from cli.console import console, progress, table, warn
    from cli.latency import print_comparison

    targets = parse_targets([flops] if flops else [], [params] if params else [], [latency] if latency else [])
    target = targets[0] if step is None else None
    key = LatencyKey(latency_device, runtime, latency_batch, threads)
    bar = progress()
    state = {}

    def on_latency(done, total, what):
        if "task" not in state:
            bar.start()
            state["task"] = bar.add_task("latency model", total=total, info="")
        bar.update(state["task"], completed=done, info=what)

    try:
        with console.status("exporting" if model_path or onnx_path or latency else "reading the search"):
            result = export_search(search_dir, target=target, step=step, out=out_path, model=model_path,
                                   onnx=onnx_path, data_dir=data_dir, force=force, latency_key=key,
                                   on_latency=on_latency)
    finally:
        bar.stop()
    config = result.config
    console.print(table(f"{result.label}: trajectory step {config.source['step']} of {search_dir}",
                        ["space", "MACs", "params", "search accuracy", "config"],
                        [[config.space, format_count(config.cost["macs"]), format_count(config.cost["params"]),
                          f"{config.source['score']:.4f}", str(result.config_path)]],
                        justify_right={"MACs", "params", "search accuracy"}))
    for check in result.checks:
        console.print(f"{check.path}: {check.format}, checked: its outputs equal the supernet's at this config "
                      f"(recalibrated BatchNorm, eval mode) on {check.images} test images and on a batch of one, "
                      f"max |difference| {check.max_abs_diff:.2g}")
    if result.latency is not None:
        model = result.latency_model
        console.print(f"latency model: {model['path']} ({model['status']})")
        predicted = config.cost["latency"]["predicted_ms"]
        print_comparison(result.latency, f"{result.label} measured on {model['described']} (predicted "
                                         f"{predicted:.3f} ms)")
        drift = model.get("drift") or {}
        if drift.get("warning"):
            warn(drift["warning"])
