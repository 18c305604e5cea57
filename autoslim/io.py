"""Files that survive crashes: every write goes to a temporary file that is renamed into place.

A crash, a full disk or Ctrl-C therefore never leaves a half-written config, checkpoint or log, and the
previous file stays intact. YAML errors name the file and line.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "write_text", "write_json", "write_yaml", "read_yaml"]

_UMASK = os.umask(0)
os.umask(_UMASK)



def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    If ``write`` (or the disk) fails, the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, data: Any, header: str | None = None) -> None:
    import yaml

    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    write_text(path, text)


def read_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed YAML, naming the file and line.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
