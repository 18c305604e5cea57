"""Budgets on the command line: ``300M``, ``1.2G``, ``450k``, ``3e8``, latencies ``3ms``, ``800us``, and their display."""

from __future__ import annotations

import re

__all__ = ["parse_budget", "format_count", "parse_latency", "format_ms"]

_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9, "t": 10**12, "T": 10**12}
_TIME_UNITS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_TIME_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|us|µs|s)?\s*$")
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")


def parse_budget(text: str | int | float) -> int:
    """Parse a count such as ``300M``, ``1.2G``, ``450k`` or ``3e8`` into an integer.

    Raises:
        ValueError: if the text is not a positive number with an optional k/M/G/T suffix.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _PATTERN.match(str(text))
        if match is None:
            raise ValueError(f"cannot read budget {text!r}: use a number with an optional k, M, G suffix (300M, 1.2G, 450k, 3e8)")
        value = float(match.group(1)) * _SUFFIXES[match.group(2)]
    if not value > 0:
        raise ValueError(f"budget {text!r} must be positive")
    return int(round(value))


def format_count(value: float, digits: int = 2) -> str:
    """Format a count with a k/M/G suffix, e.g. ``300774272 -> '300.77M'``."""
    value = float(value)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f}{suffix}"
    return f"{value:.0f}"


def parse_latency(text: str | int | float) -> float:
    """Parse a latency such as ``3ms``, ``2.5ms``, ``800us`` or ``0.01s`` into milliseconds (a bare number is ms).

    Raises:
        ValueError: if the text is not a positive number with an optional ms, us or s unit.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _TIME_PATTERN.match(str(text))
        if match is None:
            raise ValueError(f"cannot read latency {text!r}: use a number of milliseconds with an optional unit "
                             "(3ms, 2.5ms, 800us, 0.01s)")
        value = float(match.group(1)) * _TIME_UNITS[match.group(2) or "ms"]
    if not value > 0:
        raise ValueError(f"latency {text!r} must be positive")
    return value


def format_ms(value: float) -> str:
    """A latency for tables: ``2.347 ms``, ``0.052 ms``, ``123.4 ms``."""
    return f"{value:.1f} ms" if value >= 100 else f"{value:.3f} ms"
