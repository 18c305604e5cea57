"""The trajectory file of a search: one CSV row per greedy step, appended and fsynced as it is made.

A killed search resumes from its file: :func:`read_trajectory` replays the unit changes from the start config
and drops a last line cut by the kill. :func:`pareto_front` keeps the points no other point beats.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

from ..io import write_text
from .greedy import Step

__all__ = ["TRAJECTORY_COLUMNS", "append_step", "write_trajectory", "read_trajectory", "pareto_front"]

TRAJECTORY_COLUMNS = ("step", "unit", "channels", "macs", "params", "accuracy", "loss", "score", "runner_up", "candidates",
                      "seconds", "kl", "latency_ms")
# autoslim 0.x files lack runner_up and kl; files of searches before latency lack latency_ms
_REQUIRED_COLUMNS = tuple(c for c in TRAJECTORY_COLUMNS if c not in ("runner_up", "kl", "latency_ms"))


def pareto_front(steps: Sequence[Step], cost: Callable[[Step], float] = lambda s: s.macs) -> list[Step]:
    """The points no other point beats on both ``cost`` (lower; MACs by default) and accuracy (higher), by
    increasing cost.

    Of points with the same cost and accuracy the first is kept.
    """
    front: list[Step] = []
    for step in sorted(steps, key=lambda s: (cost(s), -s.accuracy)):
        if not front or step.accuracy > front[-1].accuracy:
            front.append(step)
    return front


# ---------------------------------------------------------------------------------------- trajectory


def append_step(path: Union[str, os.PathLike], step: Step) -> None:
    """Append one row to a trajectory CSV (writing the header if the file is new), then flush and fsync.

    Raises:
        ValueError: if the file ends in a broken line; read it with ``read_trajectory(..., repair=True)``
            first.
    """
    path = Path(path)
    fresh = not path.exists() or path.stat().st_size == 0
    if not fresh:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                raise ValueError(f"{path} ends in a broken line (an interrupted write): run "
                                 "read_trajectory(path, start, repair=True) before appending")
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if fresh:
            writer.writerow(TRAJECTORY_COLUMNS)
        writer.writerow(_row(step))
        handle.flush()
        os.fsync(handle.fileno())


def write_trajectory(path: Union[str, os.PathLike], steps: Sequence[Step]) -> None:
    """Write a whole trajectory CSV atomically (:func:`autoslim.io.write_text`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRAJECTORY_COLUMNS)
    writer.writerows(_row(step) for step in steps)
    write_text(path, buffer.getvalue())


def read_trajectory(path: Union[str, os.PathLike], start: Mapping[str, int], *, repair: bool = False) -> list[Step]:
    """Read a trajectory CSV, rebuilding each step's config by replaying the unit changes from ``start``.

    A last line without its newline was cut by a killed process and is dropped, even when it parses (a
    number may have been cut short). A trajectory written before the ``runner_up``, ``kl`` or ``latency_ms`` columns
    is read with them None (and rewritten with the columns when ``repair`` is set, so that it can be continued).

    Args:
        path: the CSV written by :func:`append_step`.
        start: the start (largest) config of the search.
        repair: rewrite the file without the broken line, so that :func:`append_step` can continue it.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the header or a complete row is malformed, the steps are not 0, 1, 2, ..., or a
            row names a unit missing from ``start``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trajectory at {path}: run the search first")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    broken = bool(lines) and not lines[-1].endswith("\n")
    if broken:
        lines = lines[:-1]
    steps: list[Step] = []
    if lines:
        header = tuple(next(csv.reader(lines[:1])))
        old = header != TRAJECTORY_COLUMNS and set(_REQUIRED_COLUMNS) <= set(header) <= set(TRAJECTORY_COLUMNS)
        if header != TRAJECTORY_COLUMNS and not old:
            raise ValueError(f"{path} is not a trajectory: its header is {','.join(header)}, expected "
                             f"{','.join(TRAJECTORY_COLUMNS)}")
        config = dict(start)
        for number, fields in enumerate(csv.reader(lines[1:]), start=2):
            if not fields:
                continue
            step = _step(fields, header, config, path, number)
            expected = steps[-1].step + 1 if steps else 0
            if step.step != expected:
                raise ValueError(f"{path}, line {number}: step {step.step} where step {expected} was expected; "
                                 "the file mixes two searches, start a new one in an empty directory")
            config = step.config
            steps.append(step)
    if (broken or old) and repair:
        write_trajectory(path, steps)
    return steps


def _row(step: Step) -> list:
    """The CSV fields of a step."""
    return [step.step, "" if step.unit is None else step.unit, "" if step.channels is None else step.channels,
            step.macs, step.params, step.accuracy, step.loss, step.score,
            "" if step.runner_up is None else step.runner_up, step.candidates, step.seconds,
            "" if step.kl is None else step.kl, "" if step.latency_ms is None else step.latency_ms]


def _step(fields: list[str], header: Sequence[str], config: Mapping[str, int], path: Path, number: int) -> Step:
    """Parse one CSV row of a file with ``header``, applying its unit change to ``config`` (the config before it)."""
    if len(fields) != len(header):
        raise ValueError(f"{path}, line {number}: {len(fields)} fields where {len(header)} "
                         "were expected; fix or delete that line")
    row = dict(zip(header, fields))
    try:
        unit = row["unit"] or None
        channels = int(row["channels"]) if row["channels"] else None
        step = int(row["step"])
        values = dict(macs=int(row["macs"]), params=int(row["params"]), accuracy=float(row["accuracy"]),
                      loss=float(row["loss"]), score=float(row["score"]), candidates=int(row["candidates"]),
                      seconds=float(row["seconds"]),
                      runner_up=float(row["runner_up"]) if row.get("runner_up") else None,
                      kl=float(row["kl"]) if row.get("kl") else None,
                      latency_ms=float(row["latency_ms"]) if row.get("latency_ms") else None)
    except ValueError as error:
        raise ValueError(f"{path}, line {number}: {error}; fix or delete that line") from None
    after = dict(config)
    if unit is not None:
        if unit not in after or channels is None:
            raise ValueError(f"{path}, line {number}: unit {unit!r} is not in the start config; the "
                             "trajectory belongs to another supernet")
        after[unit] = channels
    return Step(step=step, unit=unit, channels=channels, config=after, **values)
