"""What ``train-supernet`` and ``retrain`` share: running a training with a progress bar over its epochs, the notes
on settings a resumed run kept, the interrupted message (exit 130) and the rows of the result tables.

The process-wide malloc setting that the library leaves alone is made here, for the command's own process.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import click

__all__ = ["keep_memory_on_cpu", "train_with_progress", "finish_run", "cost_row", "latency_options"]


def keep_memory_on_cpu(device: str) -> None:
    """On the CPU, keep freed memory in this process (:func:`autoslim.devices.keep_freed_memory`): steps run faster."""
    from autoslim.devices import keep_freed_memory, resolve_device

    if resolve_device(device).type == "cpu":
        keep_freed_memory()


def train_with_progress(work: Callable[[Callable[[str, Any], None]], Any], *, who: Callable[[str], str],
                        prefix: Callable[[str], str], accuracies: Callable[[Mapping[str, float]], Mapping[str, float]]
                        ) -> Any:
    """Call ``work`` with a callback ``(network, report)`` that draws a bar per network; return what it returns.

    Args:
        who: names a network in the messages (``runs/x``, ``the uniform network``).
        prefix: what its bar's description and epoch lines start with (empty, ``searched ``).
        accuracies: the test accuracies to print from an ``epoch`` report's values, by name.
    """
    from cli.console import progress

    bar = progress()  # shown once training starts, so errors while loading stay one line
    tasks: dict[str, Any] = {}

    def report(network: str, r: Any) -> None:
        if r.kind == "start":
            if not tasks:
                bar.start()
            tasks[network] = bar.add_task(f"{prefix(network)}epoch {r.epoch}/{r.epochs}", total=r.total_steps,
                                          completed=r.step, info="")
            if r.step >= r.total_steps:
                bar.console.print(f"{who(network)} is already trained ({r.epochs} epochs); --force trains it again")
            elif r.values["resumed"]:
                bar.console.print(f"resuming {who(network)} at epoch {r.epoch}, step {r.step} of {r.total_steps}")
        elif r.kind == "step":
            bar.update(tasks[network], completed=r.step, description=f"{prefix(network)}epoch {r.epoch}/{r.epochs}")
        elif r.kind == "log":
            losses = " / ".join(f"{value:.3f}" for key, value in r.values.items() if key.startswith("loss"))
            bar.update(tasks[network], info=f"loss {losses}  {r.values['images_per_second']:,.0f} img/s")
        elif r.kind == "epoch":
            shown = "  ".join(f"{name} {value:.4f}" for name, value in accuracies(r.values).items())
            bar.console.print(f"{prefix(network)}epoch {r.epoch:>3}/{r.epochs}  test accuracy: {shown}")

    try:
        return work(report)
    finally:
        bar.stop()


def finish_run(result: Any, out: str, noun: str) -> None:
    """Note the given settings a resumed run kept; on an interrupted run print how to resume and exit with 130."""
    from cli.console import console

    ctx = click.get_current_context()
    typed = {name for name in ctx.params if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    for key, (theirs, given) in result.ignored.items():
        if key in typed or (key == "epochs" and "fraction" in typed):
            console.print(f"[yellow]note:[/] kept the {noun}'s {key}={theirs!r} (given {given!r}); --force starts over")
    if result.interrupted:
        console.print(f"interrupted: checkpoint saved at step {result.summary['steps']} in {out}; "
                      "run the same command again to resume")
        raise click.exceptions.Exit(130)


def cost_row(name: str, macs: int, params: int, accuracy: float | None, loss: float | None) -> list[str]:
    """A row of a result table: network, MACs, params, test accuracy, test loss."""
    from autoslim.budget import format_count

    return [name, format_count(macs), format_count(params), *("-" if v is None else f"{v:.4f}" for v in (accuracy, loss))]


def latency_options(command):
    """The options that say where ``--latency`` is measured: device, runtime, batch size and threads."""
    for option in reversed([
        click.option("--latency-device", default="cpu", show_default=True, help="Device of --latency: cpu or cuda."),
        click.option("--runtime", default="torch", show_default=True,
                     help="Runtime of --latency: torch or onnxruntime."),
        click.option("--latency-batch", type=int, default=1, show_default=True, help="Batch size of --latency."),
        click.option("--threads", type=int, default=1, show_default=True, help="CPU threads of --latency."),
    ]):
        command = option(command)
    return command
