"""Progress on the terminal: a single line on stderr, rewritten in place.

Only when stderr is a terminal: in a pipe, a log file or a test, progress lines
would be noise between the lines that matter, so nothing is written at all.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_REDRAW_SECONDS = 0.1


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class ProgressLine:
    """``update(text)`` redraws at most ten times a second; ``close()`` erases the line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty()
        self._last_draw = 0.0
        self._width = 0

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        padding = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Ticker:
    """Shows ``describe(elapsed_seconds)`` while a long operation that reports no progress
    of its own runs (verify, reindex): the operator sees it is working, not hung."""

    def __init__(self, describe: Callable[[float], str], stream: TextIO | None = None) -> None:
        self._line = ProgressLine(stream)
        self._describe = describe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._line.update(self._describe(time.monotonic() - self._started), force=True)

    def __enter__(self) -> Ticker:
        self._started = time.monotonic()
        if self._line.enabled:
            self._thread = threading.Thread(target=self._run, name="leadtrail-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._line.close()
