"""``autoslim demo``: the whole pipeline on the bundled digits data, a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Where the run, search, models and retrainings go (re-running resumes).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Supernet epochs.")
@click.option("--retrain-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Epochs of each from-scratch retraining.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Retraining seeds 0..N-1 of every network (the spread of the table).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def demo(out_dir: str, epochs: int, retrain_epochs: int, seeds: int, device: str) -> None:
    """Train a digits supernet, search three budgets, export, and retrain against uniform widths.

    The budgets are where width matters on this data: the MACs of the widest uniform networks whose held-out
    accuracy (scored by the supernet) is 1, 3 and 6 points below the uniform 1.0x network's, fixed before
    anything is retrained. Each searched network and the widest uniform network of no more MACs are trained
    from scratch with the same recipe, for every seed; the table gives mean and standard deviation.
    """
    from autoslim.budget import format_count
    from autoslim.demo import run_demo
    from cli.console import console, progress, table
    from cli.running import keep_memory_on_cpu

    keep_memory_on_cpu(device)
    bar = progress()
    tasks = {}

    def stage(name, description):
        console.print(f"[bold]{name}[/]: {description}")

    def on_train(report):
        task = tasks.get("train")
        if task is None:
            task = tasks["train"] = bar.add_task("supernet", total=report.total_steps, info="")
        values = report.values
        info = f"epoch {report.epoch}/{report.epochs}"
        if "largest_accuracy" in values:
            info += f"  test acc largest {values['largest_accuracy']:.3f} smallest {values['smallest_accuracy']:.3f}"
        bar.update(task, completed=report.step, info=info)

    def on_search(step):
        task = tasks.get("search")
        if task is None:
            task = tasks["search"] = bar.add_task("search", total=None, info="")
        bar.update(task, completed=step.step, info=f"{format_count(step.macs)} MACs  acc {step.accuracy:.3f}")

    def on_retrain(name, report):
        task = tasks.get(name)
        if task is None:
            task = tasks[name] = bar.add_task(name, total=report.total_steps, info="")
        bar.update(task, completed=report.step, info=f"epoch {report.epoch}/{report.epochs}")

    with bar:
        result = run_demo(Path(out_dir), epochs=epochs, retrain_epochs=retrain_epochs, seeds=tuple(range(seeds)),
                          device=device,
                          stage=stage, train_callback=on_train, search_step=on_search, retrain_callback=on_retrain)
    rows = [[r["budget"], f"-{r['uniform_drop']:g}", f"{r['uniform_width']:g}x",
             f"{r['searched_mean']:.2f} ± {r['searched_sd']:.2f}", f"{r['uniform_mean']:.2f} ± {r['uniform_sd']:.2f}",
             f"{r['searched_mean'] - r['uniform_mean']:+.2f}", format_count(r["searched_macs"]),
             format_count(r["uniform_macs"]), format_count(r["searched_params"]), format_count(r["uniform_params"])]
            for r in result.rows]
    seeds_text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    console.print(table(f"digits test accuracy % (mean ± sd over {seeds_text}), trained from scratch; MACs of conv "
                        "and linear layers",
                        ["budget", "held-out pts", "uniform", "AutoSlim", "uniform", "diff", "AutoSlim MACs",
                         "uniform MACs", "AutoSlim params", "uniform params"], rows,
                        justify_right={"AutoSlim", "uniform", "diff", "AutoSlim MACs", "uniform MACs",
                                       "AutoSlim params", "uniform params"}))
    console.print("held-out pts: how far below the widest uniform network the uniform network of that budget scored on "
                  "the held-out images (the rule that chose the budgets, before any retraining).")
    console.print(f"Pareto plot: {result.pareto}")
    console.print("seconds per stage: " + ", ".join(f"{k} {v:g}" for k, v in result.seconds.items()))
