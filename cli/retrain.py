"""``autoslim retrain``: train a searched network from scratch, optionally beside the uniform-width one."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.running import cost_row, finish_run, keep_memory_on_cpu, train_with_progress

__all__ = ["retrain"]


@click.command()
@click.argument("config", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the space recipe's full run).")
@click.option("--dataset", help="Dataset (default: the supernet run's, else the space's).")
@click.option("--data-dir", type=click.Path(), help="Where the dataset lives (default: the supernet run's).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--batch-size", type=int, help="Batch size (default: the recipe's; the lr scales with it).")
@click.option("--lr", type=float, help="Peak learning rate (default: the recipe's, scaled by the batch size).")
@click.option("--seed", type=int, help="Seed of initialisation, split and data order (default: the supernet run's).")
@click.option("--device", help="auto (default), cpu, cuda or cuda:N.")
@click.option("--log-every", type=int, help="Steps between rows of metrics.csv (default 50).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Directory [default: runs/retrain/CONFIG].")
@click.option("--resume", is_flag=True, help="Continue the retraining in --out with its own settings.")
@click.option("--force", is_flag=True, help="Start over even if --out holds another retraining.")
@click.option("--baseline", type=click.Choice(["uniform"]),
              help="Also train the uniform-width network of at most the config's MACs (in OUT/uniform).")
@click.option("--joint", multiple=True, metavar="CONFIG", type=click.Path(dir_okay=False),
              help="Train this config with CONFIG.yaml as one network, one BatchNorm per config; repeatable.")
@click.option("--init", "init", metavar="scratch|supernet|RUN",
              help="Where the weights start: scratch (fresh), supernet (sliced from the config's supernet run, "
              "BatchNorm recalibrated, then fine-tuned: 5% of the recipe's epochs, a tenth of its learning rate, no "
              "warm-up), or a supernet run directory. Default: supernet for configs of a supernet started from a "
              "trained network (train-supernet --init), else scratch.")
def retrain(config, epochs, dataset, data_dir, download, batch_size, lr, seed, device, log_every, out_dir, resume, force,
            baseline, joint, init) -> None:
    """Build the network of CONFIG.yaml with fresh weights, train it from scratch and test it.

    It trains with the space's full recipe on the data and split of the supernet run the config came
    from. Writes checkpoint.pt, metrics.csv, run.yaml and summary.json into --out; re-running into it
    resumes, and Ctrl-C saves a checkpoint first.

    With --init supernet it starts from the supernet's weights instead (the fast alternative to a full run), and
    --baseline uniform starts the uniform network from them too; summary.json records the test accuracy of
    that start (init_accuracy).
    """
    if baseline and joint:
        raise click.UsageError("--baseline compares one config with the uniform network; drop it or --joint")
    from autoslim.training.retraining import resolve_retrain
    from autoslim.training.retraining import retrain as run_retrain

    settings = resolve_retrain(config, joint=joint, baseline=baseline, init=init, epochs=epochs, dataset=dataset,
                               data_dir=data_dir, batch_size=batch_size, lr=lr, seed=seed, device=device,
                               log_every=log_every)
    out = out_dir or os.path.join("runs", "retrain", Path(config).stem)
    keep_memory_on_cpu(settings.train.device)
    result = train_with_progress(lambda report: run_retrain(settings, out, resume=resume, force=force,
                                                            download=download, callback=report),
                                 who=lambda network: f"the {network} network", prefix=lambda network: f"{network} ",
                                 accuracies=dict)
    finish_run(result, out, "retraining")
    _print_summary(result, out)


def _print_summary(result, out: str) -> None:
    import pandas as pd

    from cli.console import console, print_frame

    summary = result.summary
    network = f"uniform {summary['width']:g}x" if "width" in summary else "searched"
    entries = list(summary.get("joint") or [dict(summary, network=network)])
    if result.baseline is not None:
        entries.append(dict(result.baseline, network=f"uniform {result.baseline['width']:g}x"))
    rows = [cost_row(e["network"], e["macs"], e["params"], e["accuracy"], e["loss"]) for e in entries]
    frame = pd.DataFrame(rows, columns=["network", "MACs", "params", "test accuracy", "test loss"])
    how = "retrained" if summary.get("init") is None else "fine-tuned from the supernet"
    print_frame(frame, title=f"{summary['space']} {how} on {summary['dataset']}, {summary['epochs']} epochs",
                right={"MACs", "params", "test accuracy", "test loss"})
    if summary.get("init_accuracy") is not None:
        console.print(f"sliced from {summary['init']}: test accuracy {summary['init_accuracy']:.4f} before fine-tuning")
    seconds = summary["seconds"] + (result.baseline["seconds"] if result.baseline else 0)
    console.print(f"{seconds:.1f} s on {summary['device']}; saved in {out}")
