"""``autoslim train-supernet``: train a slimmable supernet with the sandwich rule (options -> settings -> run)."""

from __future__ import annotations

import os

import click

from cli.running import cost_row, finish_run, keep_memory_on_cpu, train_with_progress

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
@click.option("--init", "init", type=click.Path(), metavar="WEIGHTS",
              help="Start from a trained network of SPACE: a state dict (.pt, .pth, .safetensors: your own, "
              "torchvision's or timm's; nothing is downloaded), a TorchScript file or a retrain directory. The "
              "supernet is built at its widths, its channels ordered by importance, then fine-tuned; the defaults "
              "suit fine-tuning: 5% of the recipe's epochs, a tenth of its learning rate, no warm-up.")
@click.option("--log-every", type=int, help="Steps between rows of metrics.csv (default 50).")
@click.option("--out", "out_dir", type=click.Path(), help="Run directory (default runs/SPACE).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own settings.")
@click.option("--force", is_flag=True, help="Start over even if --out holds another run.")
def train_supernet(space_name: str, dataset: str | None, data_dir: str | None, download: bool, epochs: int | None,
                   fraction: float | None, batch_size: int | None, lr: float | None, schedule: str | None, num_subnets: int | None,
                   seed: int | None, search_size: str | None, device: str | None, amp: str | None,
                   channels_last: str | None, width_mult: float | None, init: str | None, log_every: int | None,
                   out_dir: str | None, resume: bool, force: bool) -> None:
    """Train a universally slimmable supernet of SPACE (sandwich rule, in-place distillation).

    Writes checkpoint.pt, metrics.csv, run.yaml and summary.json into --out. Re-running into the same
    directory resumes; Ctrl-C saves a checkpoint first. Data-parallel:
    `torchrun --nproc-per-node N $(which autoslim) train-supernet ...`.

    With --init the supernet starts as a trained network (its largest config), and summary.json records that
    network's test accuracy (init_accuracy, its own BatchNorm statistics). The weights are already good, so the
    fine-tune is short and gentle: the full recipe's rate would undo them, and warm-up only protects random ones.
    """
    if epochs is not None and fraction is not None:
        raise click.UsageError("give --epochs or --fraction, not both")
    from autoslim.spaces import configure_space, load_space
    from autoslim.training.settings import resolve_settings
    from autoslim.training.supernet_training import train_supernet as train

    space = configure_space(load_space(space_name), width_mult=width_mult)
    settings = resolve_settings(
        space, fraction=fraction, dataset=dataset, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule,
        num_subnets=num_subnets, seed=seed, search_size=_search_size(search_size), device=device, amp=amp,
        channels_last=channels_last, log_every=log_every, init=init,
        width_mult=width_mult if width_mult is None else space.width_mult)
    out = out_dir or os.path.join("runs", space.name.replace(":", "_").replace("/", "_"))
    keep_memory_on_cpu(settings.device)
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel workers stay quiet
        train(settings, out, resume=resume, force=force, download=download)
        return

    def largest_first(values):
        return {name: values[f"{name}_accuracy"] for name in ("largest", "smallest")}

    result = train_with_progress(lambda report: train(settings, out, resume=resume, force=force, download=download,
                                                      callback=lambda r: report("supernet", r)),
                                 who=lambda _: out, prefix=lambda _: "", accuracies=largest_first)
    finish_run(result, out, "run")
    _print_summary(result.summary, out)


def _print_summary(summary: dict, out: str) -> None:
    import pandas as pd

    from cli.console import console, print_frame

    rows = [cost_row(name, summary[f"{name}_macs"], summary[f"{name}_params"], summary[f"{name}_accuracy"],
                     summary[f"{name}_loss"]) for name in ("largest", "smallest")]
    frame = pd.DataFrame(rows, columns=["config", "MACs", "params", "test accuracy", "test loss"])
    print_frame(frame, title=f"{summary['space']} supernet on {summary['dataset']}, {summary['epochs']} epochs",
                right={"MACs", "params", "test accuracy", "test loss"})
    if summary.get("init") is not None:
        console.print(f"started from {summary['init']}: test accuracy {summary['init_accuracy']:.4f} as loaded "
                      "(the trained network's own BatchNorm statistics)")
    console.print(f"{summary['seconds']:.0f} s ({summary['seconds_per_epoch'] or 0:.1f} s/epoch, "
                  f"{summary['images_per_second'] or 0:,.0f} img/s) on {summary['device']}; run saved in {out}")
