"""Progress on the operator's terminal, drawn on stderr with ``rich``.

Only when stderr is a terminal: in a pipe, a log file or a test, progress would
be noise between the lines that matter, so nothing at all is written there.
Two shapes: ``ProgressBar`` for work of known size (the engine reports
``progress(done, total)``: verify, reindex, compact, erase) and
``ProgressLine`` for a count that grows to an unknown end (append, export,
demo). Both leave the terminal as they found it when they close.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _on_terminal(stream: TextIO | None, *columns: ProgressColumn | str) -> Progress | None:
    """A progress display of ``columns`` on ``stream`` (stderr by default) if it is a
    terminal, else None.

    Erased when done; stdout is left alone (it may be a pipe, or the export being
    written), so nothing the command prints there is redirected.
    """
    console = _terminal(stream)
    if console is None:
        return None
    return Progress(
        *columns,
        console=console,
        transient=True,
        refresh_per_second=10,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _terminal(stream: TextIO | None) -> Console | None:
    """A console on ``stream`` (stderr by default) if it is a terminal, else None."""
    stream = stream if stream is not None else sys.stderr
    try:
        interactive = stream.isatty()
    except ValueError:  # a closed stream
        return None
    if not interactive:
        return None
    return Console(file=stream, force_terminal=True)


class _Display:
    """A rich progress display that exists only on a terminal; ``with`` starts and ends it."""

    def __init__(self, progress: Progress | None, description: str, stream: TextIO | None) -> None:
        self._progress = progress
        self._stream = stream if stream is not None else sys.stderr
        self._task: TaskID | None = None
        if progress is not None:
            # No total yet: the bar pulses until the first progress(done, total).
            self._task = progress.add_task(description, total=None)

    def _update(
        self, *, completed: int | None = None, total: int | None = None, description: str | None = None
    ) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total, description=description)

    def note(self, line: str) -> None:
        """A line on stderr that stays: above the display on a terminal, plain otherwise."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._stream)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ProgressBar(_Display):
    """``description  ━━━━━━━━━━╸━━━━━  12/40 segments  0:00:03  -0:00:07``.

    The instance is the engine's ``progress(done, total)`` callback.
    """

    def __init__(self, description: str, unit: str, stream: TextIO | None = None) -> None:
        progress = _on_terminal(
            stream,
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        super().__init__(progress, description, stream)

    def __call__(self, done: int, total: int) -> None:
        self._update(completed=done, total=total)


class ProgressLine(_Display):
    """A spinner and a line of text that ``update(text)`` replaces: a count with no known end."""

    def __init__(self, stream: TextIO | None = None) -> None:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        progress = _on_terminal(stream, *columns)
        super().__init__(progress, "", stream)

    def update(self, text: str) -> None:
        self._update(description=text)
