"""``autoslim spaces``: the bundled search spaces, or the channel units of one."""

from __future__ import annotations

import click

__all__ = ["spaces"]


@click.command()
@click.option("--units", "units_of", metavar="NAME", help="List the channel units of this space (or torchvision:NAME, file.py:fn).")
@click.option("--input-size", type=click.IntRange(min=1), help="Input size for costs (default: the space's).")
@click.option("--width-mult", type=float, help="Supernet width, for builders with a width argument (default: the space's).")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classes of the classifier (default: the space's).")
def spaces(units_of: str | None, input_size: int | None, width_mult: float | None, num_classes: int | None) -> None:
    """List the search spaces, or the channel units of one of them (--units SPACE).

    SPACE is a bundled space, a YAML file, torchvision:NAME (any torchvision classification model) or
    path/to/file.py:function (a function returning an nn.Module).
    """
    from autoslim.budget import format_count
    from autoslim.spaces import build_supernet, configure_space, list_spaces, load_space
    from cli.console import console, table

    if units_of:
        space = configure_space(load_space(units_of), width_mult=width_mult, num_classes=num_classes,
                                input_size=input_size)
        supernet = build_supernet(space)
        rows = []
        for unit in supernet.layer_units:
            choices = ", ".join(str(c) for c in unit.choices) if unit.frozen is None else "-"
            layers = unit.modules
            shown = ", ".join(layers[:3]) + (f" (+{len(layers) - 3})" if len(layers) > 3 else "")
            rows.append([unit.name, unit.maximum, choices, shown, unit.frozen or ""])
        share = len(supernet.slimmable_units) / len(supernet.layer_units)
        console.print(table(f"{space.name}: {len(supernet.slimmable_units)} slimmable ({share:.0%}), "
                            f"{len(supernet.frozen_units)} frozen units; {format_count(supernet.cost().macs)} MACs at "
                            f"{space.in_channels}x{space.input_size}x{space.input_size}",
                            ["unit", "max", "choices", "layers", "frozen because"], rows, justify_right={"max"}))
        return
    if width_mult is not None or num_classes is not None:
        raise click.UsageError("--width-mult and --num-classes apply to one space: give --units SPACE")
    if input_size is not None:
        raise click.UsageError("--input-size applies to one space: give --units SPACE")
    rows = []
    for name in list_spaces():  # read from their YAML files only: tracing every space would take seconds
        space = load_space(name)
        size = space.input_size
        rows.append([name, f"{space.builder.split(':')[-1]} {space.width_mult:g}x", f"{space.in_channels}x{size}x{size}",
                     str(space.num_classes), space.dataset, space.description])
    console.print(table("search spaces (autoslim spaces --units NAME lists one's channel units and cost)",
                        ["space", "supernet", "input", "classes", "dataset", "description"], rows))
    console.print("Also: torchvision:NAME (any torchvision classification model), path/to/file.py:function "
                  "(a function returning your nn.Module), or a YAML file.")
