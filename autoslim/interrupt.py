"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, then stop.

A training loop checks :attr:`StopRequest.requested` between optimizer steps; the first signal only sets
it, so the checkpoint written afterwards is consistent. A second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a flag checked between steps; a second one interrupts at once.

    Signal handlers can only be installed from the main thread; elsewhere the flag is never set.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
