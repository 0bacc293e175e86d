"""Riding out a database outage: which errors mean "the database is away", and saying so once.

The daemon's loops (the projector's batches and its wait for new events, the ingest's writer and
its read-model lookups, the metrics endpoint) retry their database work with backoff for as long
as an outage lasts, however long (issue 10, tests/storage/test_database_outage.py and
tests/xmpp/test_daemon_outage.py against a PostgreSQL that goes away). A warning per retry
would bury the log of a long outage, so each loop keeps one :class:`Outage`: one warning when an
attempt first fails, with the error; nothing while the retries keep failing; one line when the
database answers again, saying for how long it was away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from .db import DatabaseUnavailable

#: Errors that say the database is away or busy, not that the work is wrong: try again later.
#: OperationalError covers a refused or lost connection, a server shutting down and a lock
#: timeout; InterfaceError a connection closed under us; TimeoutError an exhausted pool.
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    DatabaseUnavailable,
)


def first_line(exc: BaseException) -> str:
    """The driver's one-line reason: its messages run on with hints and SQLAlchemy links."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else None
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def exponential(initial: float, cap: float) -> Callable[[int], float]:
    """Delays of ``initial * 2**(attempt - 1)`` seconds, at most ``cap``."""
    return lambda attempt: min(cap, initial * 2 ** min(attempt - 1, 64))


class Outage:
    """The outage state of one loop: counts failed attempts, logs its start and its end."""

    def __init__(self, what: str, logger: logging.Logger, *, delay: Callable[[int], float]) -> None:
        self._what = what
        self._log = logger
        self._delay = delay
        self._since: float | None = None
        self.failures = 0
        """Attempts failed since the outage began (0 when the database answers)."""

    @property
    def ongoing(self) -> bool:
        """Whether the last attempt failed."""
        return self._since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        self.failures += 1
        delay = self._delay(self.failures)
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning(
                "%s: database unavailable (%s); retrying with backoff until it is back",
                self._what,
                first_line(exc),
                extra={"next_attempt_in": delay},
            )
        return delay

    def ended(self) -> None:
        """Record a successful attempt; logs the end of an outage, if one was going on."""
        if self._since is None:
            return
        seconds = time.monotonic() - self._since
        self._log.info(
            "%s: database back after %.1f s (%d failed attempts)",
            self._what,
            seconds,
            self.failures,
        )
        self._since = None
        self.failures = 0
