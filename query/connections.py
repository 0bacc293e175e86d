"""A few DB-API connections the cached-read hot path keeps checked out of the engine's pool.

Checking a connection out of SQLAlchemy's pool costs a pre-ping round trip on PostgreSQL and a
rollback round trip when it goes back: two of the three round trips of a cached page. Reads
here keep up to ``size`` connections instead (in autocommit on PostgreSQL, so a statement is its
own snapshot and nothing needs ending), and take them back to the pool on :meth:`close`.

A kept connection the server dropped (a restart) fails the next read on it: that read is tried
once more on a fresh, pre-pinged connection from the pool, and the dead one is discarded.
Reads are idempotent, so the retry is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

T = TypeVar("T")


class KeptConnections:
    """Up to ``size`` idle DB-API connections, handed to one caller at a time."""

    def __init__(self, engine: Engine, *, size: int = 4) -> None:
        self._engine = engine
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._postgres = engine.dialect.name == "postgresql"
        self._driver_errors = _driver_errors(engine)
        # Disposing of the engine must not strand the connections kept out of its pool.
        sa.event.listen(engine, "engine_disposed", self._disposed)

    def run(self, read: Callable[[Any], T]) -> T:
        """``read(dbapi_connection)`` on a kept connection (once more on a fresh one if the
        kept one turns out to be dead)."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        fresh = connection is None
        if connection is None:
            connection = self._checkout()
        try:
            result = read(connection)
        except self._driver_errors:
            self._discard(connection)
            if fresh:
                raise
            return self.run(read)
        except BaseException:
            self._discard(connection)
            raise
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(connection)
                return result
        self._release(connection)
        return result

    def close(self) -> None:
        """Give every kept connection back to the engine's pool."""
        if sa.event.contains(self._engine, "engine_disposed", self._disposed):
            sa.event.remove(self._engine, "engine_disposed", self._disposed)
        for connection in self._take_idle():
            self._release(connection)

    def _disposed(self, _engine: Engine) -> None:
        # The pool they came from is gone: close them rather than check them back into it.
        for connection in self._take_idle():
            self._discard(connection)

    def _take_idle(self) -> list[Any]:
        with self._lock:
            idle, self._idle = self._idle, []
        return idle

    def _checkout(self) -> Any:
        connection: Any = self._engine.raw_connection()
        if self._postgres:
            connection.driver_connection.autocommit = True
        return connection

    def _release(self, connection: Any) -> None:
        if self._postgres:
            connection.driver_connection.autocommit = False
        connection.close()

    def _discard(self, connection: Any) -> None:
        try:
            connection.invalidate()  # the pool opens a new one in its place
            connection.close()
        except Exception:  # already dead: nothing more to release
            pass


def _driver_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    # "This connection is unusable": the driver's own errors, as the hot path runs below Core.
    dbapi = engine.dialect.loaded_dbapi
    return (dbapi.OperationalError, dbapi.InterfaceError)
