"""Progress of long work: a bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class Reporter:
    """``with Reporter("replay") as report: report(done, total)``."""

    def __init__(self, label: str, *, start: int = 0, every: float = 5.0) -> None:
        self._label = label
        self._every = every
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start = time.monotonic()
        self._last = 0.0
        self._first_done = start

    def __enter__(self) -> Reporter:
        if sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10} ev/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=None, rate="")
        return self

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` are finished."""
        now = time.monotonic()
        rate = (done - self._first_done) / max(now - self._start, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, rate=f"{rate:,.0f}")
        elif now - self._last >= self._every or done >= total:
            self._last = now
            eta = (total - done) / rate if rate > 0 else float("inf")
            print(
                f"{self._label}: {done}/{total} ({rate:,.0f} events/s, ETA {eta:,.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
