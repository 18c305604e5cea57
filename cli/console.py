"""The one rich Console of the command line, its tables and progress bars.

The library never prints; commands render what it returns here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["console", "error_console", "table", "print_frame", "progress", "error"]

def _width() -> int | None:
    """Terminal width; wide enough for our tables when output goes to a file or pipe."""
    return None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160


console = Console(highlight=False, width=_width())
error_console = Console(stderr=True, highlight=False, width=_width())


def error(message: str) -> None:
    """One red line on stderr."""
    error_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """One yellow line on stderr."""
    error_console.print(f"[bold yellow]warning:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, justify_right: set[str] | None = None) -> Table:
    justify_right = justify_right or set()
    result = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        result.add_column(column, justify="right" if column in justify_right else "left")
    for row in rows:
        result.add_row(*(str(value) for value in row))
    return result


def print_frame(frame, title: str | None = None, right: set[str] | None = None) -> None:
    """Render a pandas DataFrame as a table (numbers right-aligned)."""
    numeric = {str(c) for c in frame.columns if frame[c].dtype.kind in "iuf"}
    console.print(table(title, [str(c) for c in frame.columns], frame.values.tolist(),
                        justify_right=numeric | (right or set())))


class _LoggedProgress(Progress):
    """A progress bar that, when output is not a terminal (nohup, CI, a pipe), draws nothing and prints a plain
    line instead at most every ``every`` seconds, and once when a task finishes; never the same line twice."""

    every = 30.0

    def __init__(self, *columns, console: Console, **options) -> None:
        super().__init__(*columns, console=console, disable=not console.is_terminal, **options)

    def update(self, task_id, **kwargs) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        if self.console.is_terminal:
            return
        task = self._tasks.get(task_id)
        if task is None or task.fields.get("_logged_done"):
            return
        now = task.get_time()
        last = task.fields.get("_logged_at")
        finished = task.total is not None and task.completed >= task.total
        if last is not None and now - last < self.every and not finished:
            return
        eta = task.time_remaining
        line = (f"{task.description}: {task.completed:,.0f}/{task.total or 0:,.0f} {task.fields.get('info', '')} "
                f"elapsed {_clock(task.elapsed)}{'' if eta is None or finished else ' eta ' + _clock(eta)}")
        task.fields["_logged_at"] = now
        task.fields["_logged_done"] = finished
        if line != task.fields.get("_logged_line"):
            task.fields["_logged_line"] = line
            self.console.print(line, highlight=False)


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(*, transient: bool = False) -> Progress:
    """A progress bar with counts, elapsed time and ETA; extra fields render as ``{task.fields[...]}``.

    Where output is not a terminal it prints a line every 30 seconds instead.
    """
    return _LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
