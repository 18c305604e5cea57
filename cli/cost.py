"""``autoslim cost``: exact MACs and parameters of a uniform width or a config file."""

from __future__ import annotations

import json
import os

import click

from cli.running import latency_options

__all__ = ["cost"]


@click.command()
@click.argument("space_name", metavar="SPACE")
@click.option("--width", type=float, help="Uniform width multiplier (1.0 = the standard network).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="A channel config YAML.")
@click.option("--input-size", type=click.IntRange(min=1), help="Input height and width (default: the space's).")
@click.option("--width-mult", type=float, help="Supernet width, for builders with a width argument (default: the space's).")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classes of the classifier (default: the space's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--save-config", type=click.Path(dir_okay=False),
              help="With --width: write the uniform network as a config file (for retrain).")
@click.option("--force", is_flag=True, help="Overwrite --save-config's file.")
@click.option("--latency", "measure_latency", is_flag=True,
              help="Also measure the network's latency as a whole, beside the widest uniform network within the same "
                   "latency, the uniform network of equal MACs and the full network.")
@latency_options
def cost(space_name: str, width: float | None, config_path: str | None, input_size: int | None,
         width_mult: float | None, num_classes: int | None, as_json: bool, save_config: str | None,
         force: bool, measure_latency: bool, latency_device: str, runtime: str, latency_batch: int,
         threads: int) -> None:
    """MACs and parameters of SPACE at a uniform --width or a --config file.

    SPACE is a bundled space, a YAML file, torchvision:NAME or path/to/file.py:function. MACs count the
    multiply-accumulates of conv and linear layers (the paper's "FLOPs"). With --save-config, the uniform
    network is written as a channel config that `autoslim retrain` trains, e.g. to bracket a searched config
    between the uniform widths below and above it. With --latency the network is exported and timed whole (at the
    space's input size, untrained weights: latency does not depend on them).
    """
    if (width is None) == (config_path is None):
        raise click.UsageError("give exactly one of --width W or --config FILE")
    if save_config and width is None:
        raise click.UsageError("--save-config writes the network of --width W")
    if save_config and not force and os.path.exists(save_config):
        raise click.UsageError(f"{save_config} exists: pass --force to overwrite it")
    from autoslim.budget import format_count
    from autoslim.channel_config import load_config
    from autoslim.spaces import build_supernet, configure_space, load_space, space_options
    from cli.console import console, table

    if config_path:
        loaded = load_config(config_path)
        space = load_space(space_name)
        if loaded.space != space.name and loaded.space != space_name:
            raise ValueError(f"{config_path} is a config of space {loaded.space!r}, not {space.name!r}")
        options = loaded.space_options
        space = configure_space(space, width_mult=width_mult or (options.get("width_mult") if space.width_arg else None),
                                num_classes=num_classes or options.get("num_classes"))
        supernet = build_supernet(space)
        config = supernet.validate_config(loaded.channels)
    else:
        space = configure_space(load_space(space_name), width_mult=width_mult, num_classes=num_classes)
        supernet = build_supernet(space)
        if not 0 < width <= space.width_mult + 1e-9:
            raise ValueError(f"--width {width:g} is outside the range (0, {space.width_mult:g}] of space {space.name}")
        config = supernet.uniform_config(width)
    size = input_size or space.input_size
    result = supernet.cost(config, input_size=size)
    comparison = None
    if measure_latency:
        from autoslim.latency import LatencyKey, compare_latency, device_description, make_timer

        if input_size is not None and input_size != supernet.input_size:
            raise click.UsageError("--latency measures at the space's input size; drop --input-size")
        key = LatencyKey(latency_device, runtime, latency_batch, threads)
        timer = make_timer(key)
        with console.status(f"measuring on {key.describe()}"):
            comparison = compare_latency(supernet, config, timer, uniform=config_path is not None,
                                         name=config_path if config_path else f"uniform {width:g}x")
    if save_config:
        from autoslim.channel_config import ChannelConfig, save_config as write_config
        from autoslim.training.settings import space_reference

        options = space_options(space, num_classes=space.num_classes, input_size=size)
        write_config(save_config, ChannelConfig(space=space_reference(space), channels=config, space_options=options,
                                                cost={"macs": result.macs, "params": result.params, "input_size": size},
                                                source={"uniform": width}))
    if as_json:
        found = {"space": space.name, "width": width, "config": config_path, "input_size": size,
                 "macs": int(result.macs), "params": int(result.params), "channels": config}
        if comparison is not None:
            found["latency"] = {**key.to_dict(), "description": device_description(key), **comparison.to_dict()}
        print(json.dumps(found))
        return
    rows = [[unit.name, config.get(unit.name, unit.maximum), unit.maximum, unit.frozen or ""] for unit in supernet.layer_units]
    console.print(table(f"{space.name} at {'width ' + format(width, 'g') if width else config_path}",
                        ["unit", "channels", "max", "frozen because"], rows, justify_right={"channels", "max"}))
    console.print(f"MACs {result.macs:,} ({format_count(result.macs)}), params {result.params:,} "
                  f"({format_count(result.params)}) at {space.in_channels}x{size}x{size}")
    if comparison is not None:
        from cli.latency import print_comparison

        print_comparison(comparison, f"measured on {key.describe()} ({device_description(key)['cpu']})")
    if save_config:
        console.print(f"wrote {save_config}")

