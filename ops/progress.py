"""Progress of long work: a bar with rate and ETA on a terminal, plain lines otherwise, and a
closing summary (count, elapsed time, rate) for every long command."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass(frozen=True)
class Summary:
    """How long work went: ``count`` things in ``seconds``."""

    count: int
    seconds: float
    unit: str = "events"

    @property
    def rate(self) -> float:
        """Things per second."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def line(self, verb: str) -> str:
        """``"imported 1,000 events in 0.4 s (2,500 events/s)"``."""
        return (
            f"{verb} {self.count:,} {self.unit} in {self.seconds:,.1f} s "
            f"({self.rate:,.0f} {self.unit}/s)"
        )

    def as_dict(self) -> dict[str, float | int]:
        """A JSON-ready dict: count, seconds, rate."""
        return {"count": self.count, "seconds": round(self.seconds, 3), "rate": round(self.rate, 1)}


class Reporter:
    """``with Reporter("replay") as report: report(done, total)``, then ``report.summary(n)``.

    ``total`` may be ``None`` when unknown (an import read from a pipe). Plain lines come at most
    every ``every`` seconds, so a short run prints none.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "events",
        start: int = 0,
        every: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self._label = label
        self._unit = unit
        self._every = every
        self._stream = stream
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start = time.monotonic()
        self._last = self._start
        self._first_done = start

    @property
    def stream(self) -> TextIO:
        """Where progress goes: standard error unless told otherwise."""
        return self._stream or sys.stderr

    def __enter__(self) -> Reporter:
        self._start = self._last = time.monotonic()
        if self.stream.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10} " + self._unit + "/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=None, rate="")
        return self

    def __call__(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` of ``total`` are finished."""
        now = time.monotonic()
        rate = (done - self._first_done) / max(now - self._start, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, rate=f"{rate:,.0f}")
            return
        if now - self._last < self._every:
            return
        self._last = now
        of = f"/{total:,}" if total is not None else ""
        eta = ""
        if total is not None and rate > 0:
            eta = f", ETA {(total - done) / rate:,.0f} s"
        print(
            f"{self._label}: {done:,}{of} {self._unit} ({rate:,.0f} {self._unit}/s{eta})",
            file=self.stream,
            flush=True,
        )

    def summary(self, count: int) -> Summary:
        """``count`` things done since the start."""
        return Summary(count, time.monotonic() - self._start, self._unit)

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
