"""Entry point of the ``autoslim`` command: a click group whose commands live one per module.

Start-up imports only click; each command imports torch and the library inside its body, so
``autoslim --help`` answers instantly. Library errors (ValueError, FileNotFoundError, ...) become one red
line and exit code 1; usage errors exit 2; ``AUTOSLIM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import click

from autoslim import __version__

__all__ = ["cli", "main"]

# command name -> "module:function"; imported only when the command runs (or its help is asked for)
_COMMANDS = {
    "spaces": "cli.spaces:spaces",
    "cost": "cli.cost:cost",
    "train-supernet": "cli.train:train_supernet",
    "latency": "cli.latency:latency",
    "search": "cli.search:search",
    "export-config": "cli.export:export_config",
    "retrain": "cli.retrain:retrain",
    "demo": "cli.demo:demo",
}


class _UserError(click.ClickException):
    """An error the user can fix: one red line, exit code 1."""

    def show(self, file=None) -> None:
        from cli.console import error

        error(self.message)


class AutoslimGroup(click.Group):
    """Loads command modules lazily and turns library errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in _COMMANDS.items() if _available(target)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None or not _available(target):
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130)
        except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, RuntimeError) as err:
            if os.environ.get("AUTOSLIM_DEBUG"):
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _UserError(message) from err


def _available(target: str) -> bool:
    module = target.partition(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=AutoslimGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="autoslim")
def cli() -> None:
    """AutoSlim: find how many channels each layer of a CNN should have under a budget.

    \b
    autoslim demo                                   the whole pipeline on the bundled digits data
    autoslim spaces [--units NAME]                  the search spaces and their channel units
    autoslim cost SPACE --width 1.0                 exact MACs and parameters of a config
    autoslim train-supernet --space SPACE --out RUN train a slimmable supernet
             ... --init WEIGHTS                     starting from your trained network
    autoslim latency RUN [--runtime onnxruntime]    measure the supernet's latency model on this machine
    autoslim search RUN --flops 300M                greedy slimming, one config per budget (or --latency 3ms)
    autoslim export-config SEARCH --flops 300M      the config (and a standalone model)
    autoslim retrain CONFIG.yaml --baseline uniform train it from scratch beside the uniform net
             ... --init supernet                    or fine-tune it from the supernet's weights

    "FLOPs" are multiply-accumulates (MACs) of conv and linear layers, as in the paper.
    """


def main() -> None:
    cli(prog_name="autoslim")
