"""Ctrl-C and SIGTERM that never land in the middle of a parameter update."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class InterruptGuard:
    """Turns SIGINT and SIGTERM into KeyboardInterrupt, but never in the middle of an update.

    Inside `update()` a signal is held back until the parameters, optimiser and counters are all
    consistent again, so the checkpoint written on the way out is a state the loop really passed.
    Handlers can only be installed from the main thread; elsewhere signals keep their defaults.
    """

    def __init__(self) -> None:
        self._updating = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self._updating:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"training stopped by {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def update(self) -> Iterator[None]:
        self._updating = True
        try:
            yield
        finally:
            self._updating = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"training stopped by {signal.Signals(signum).name}")
