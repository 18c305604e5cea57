"""``autoslim train-supernet``: train a slimmable supernet with the sandwich rule (options -> settings -> run)."""

from __future__ import annotations

import os

import click

__all__ = ["train_supernet"]


def _search_size(value: str | None) -> int | float | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is neither a count nor a fraction") from None


@click.command("train-supernet")
@click.option("--space", "space_name", required=True, metavar="SPACE", help="Search space (see `autoslim spaces`).")
@click.option("--dataset", help="Dataset (default: the space's): digits, cifar10, cifar100, mnist, fashion-mnist, "
              "npz, imagefolder, fake.")
@click.option("--data-dir", type=click.Path(), help="Where the dataset lives (an .npz file for npz).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--epochs", type=int, help="Supernet epochs (default: --fraction of the recipe's epochs).")
@click.option("--fraction", type=float, help="Fraction of the recipe's full-training epochs (default 0.2).")
@click.option("--batch-size", type=int, help="Global batch size (default: the recipe's; the lr scales with it).")
@click.option("--lr", type=float, help="Peak learning rate (default: the recipe's, scaled by the batch size).")
@click.option("--schedule", type=click.Choice(["cosine", "one-cycle"]),
              help="Learning-rate schedule: cosine (warm-up, then cosine to zero; default) or one-cycle.")
@click.option("--num-subnets", type=int, help="Subnets per batch: largest, smallest and n-2 random (default 4).")
@click.option("--seed", type=int, help="Seed of initialisation, split, data order and subnets (default 0).")
@click.option("--search-size", help="Training images held out for the search: a count or a fraction (default 10%).")
@click.option("--device", help="auto (default), cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "on", "off"]), help="bf16 autocast (auto: on for CUDA with bf16).")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), help="channels_last memory format (auto: off).")
@click.option("--width-mult", type=float,
              help="Supernet width, for spaces whose builder takes one (torchvision:mobilenet_v2; default: the space's).")
@click.option("--log-every", type=int, help="Steps between rows of metrics.csv (default 50).")
@click.option("--out", "out_dir", type=click.Path(), help="Run directory (default runs/SPACE).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own settings.")
@click.option("--force", is_flag=True, help="Start over even if --out holds another run.")
def train_supernet(space_name: str, dataset: str | None, data_dir: str | None, download: bool, epochs: int | None,
                   fraction: float | None, batch_size: int | None, lr: float | None, schedule: str | None, num_subnets: int | None,
                   seed: int | None, search_size: str | None, device: str | None, amp: str | None,
                   channels_last: str | None, width_mult: float | None, log_every: int | None, out_dir: str | None, resume: bool,
                   force: bool) -> None:
    """Train a universally slimmable supernet of SPACE (sandwich rule, in-place distillation).

    Writes checkpoint.pt, metrics.csv, run.yaml and summary.json into --out. Re-running into the same
    directory resumes; Ctrl-C saves a checkpoint first. Data-parallel:
    `torchrun --nproc-per-node N $(which autoslim) train-supernet ...`.
    """
    if epochs is not None and fraction is not None:
        raise click.UsageError("give --epochs or --fraction, not both")
    from autoslim.settings import resolve_settings
    from autoslim.spaces import configure_space, load_space
    from autoslim.train import train_supernet as train

    space = configure_space(load_space(space_name), width_mult=width_mult)
    settings = resolve_settings(
        space, fraction=fraction, dataset=dataset, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule,
        num_subnets=num_subnets, seed=seed, search_size=_search_size(search_size), device=device, amp=amp,
        channels_last=channels_last, log_every=log_every,
        width_mult=width_mult if width_mult is None else space.width_mult)
    out = out_dir or os.path.join("runs", space.name.replace(":", "_").replace("/", "_"))
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel workers stay quiet
        train(settings, out, resume=resume, force=force, download=download)
        return

    from cli.console import console, progress

    bar = progress()  # shown once training starts, so errors while loading stay one line
    task = None

    def report(r) -> None:
        nonlocal task
        if r.kind == "start":
            bar.start()
            task = bar.add_task(f"epoch {r.epoch}/{r.epochs}", total=r.total_steps, completed=r.step, info="")
            if r.step >= r.total_steps:
                bar.console.print(f"{out} is already trained ({r.epochs} epochs); --force trains it again")
            elif r.values["resumed"]:
                bar.console.print(f"resuming {out} at epoch {r.epoch}, step {r.step} of {r.total_steps}")
        elif r.kind == "step":
            bar.update(task, completed=r.step, description=f"epoch {r.epoch}/{r.epochs}")
        elif r.kind == "log":
            v = r.values
            bar.update(task, info=f"loss {v['loss_largest']:.3f} / {v['loss_smallest']:.3f}  "
                                  f"{v['images_per_second']:,.0f} img/s")
        elif r.kind == "epoch":
            v = r.values
            bar.console.print(f"epoch {r.epoch:>3}/{r.epochs}  test accuracy: largest {v['largest_accuracy']:.4f}"
                              f"  smallest {v['smallest_accuracy']:.4f}")

    try:
        result = train(settings, out, resume=resume, force=force, download=download, callback=report)
    finally:
        bar.stop()
    ctx = click.get_current_context()
    typed = {name for name in ctx.params if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    for key, (theirs, given) in result.ignored.items():
        if key in typed or (key == "epochs" and "fraction" in typed):
            console.print(f"[yellow]note:[/] kept the run's {key}={theirs!r} (given {given!r}); --force starts over")
    if result.interrupted:
        console.print(f"interrupted: checkpoint saved at step {result.summary['steps']} in {out}; "
                      "run the same command again to resume")
        raise click.exceptions.Exit(130)
    _print_summary(result.summary, out)


def _print_summary(summary: dict, out: str) -> None:
    import pandas as pd

    from autoslim.budget import format_count
    from cli.console import console, print_frame

    rows = [[name, format_count(summary[f"{name}_macs"]), format_count(summary[f"{name}_params"]),
             _fmt(summary[f"{name}_accuracy"]), _fmt(summary[f"{name}_loss"])] for name in ("largest", "smallest")]
    frame = pd.DataFrame(rows, columns=["config", "MACs", "params", "test accuracy", "test loss"])
    print_frame(frame, title=f"{summary['space']} supernet on {summary['dataset']}, {summary['epochs']} epochs",
                right={"MACs", "params", "test accuracy", "test loss"})
    console.print(f"{summary['seconds']:.0f} s ({summary['seconds_per_epoch'] or 0:.1f} s/epoch, "
                  f"{summary['images_per_second'] or 0:,.0f} img/s) on {summary['device']}; run saved in {out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
