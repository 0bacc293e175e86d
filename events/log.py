"""The append-only event log: append, read after a position, head, and wait for new events.

The log is the only source of truth. Its sequence number is called ``position`` everywhere.

Invariant 1 (nothing is skipped): a reader that has seen position P must never later find a
committed event below P. SQLite has one writer at a time (``BEGIN IMMEDIATE``), so positions
are assigned and committed in the same order. PostgreSQL does not give this for free: two
transactions draw 7 and 8 from the sequence, 8 commits first, a reader sees 8 and moves on,
then 7 commits behind it. As in the ``eventsourcing`` library's PostgreSQL recorder, appends
take an EXCLUSIVE table lock (it conflicts with other writers but not with readers) before
drawing positions, and hold it to commit, bounded by ``lock_timeout``. tests/storage/
test_event_log_concurrency.py pins this with concurrent appenders and a tailing reader.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache import telemetry
from pubsub_cache.errors import PubsubCacheError

from .codec import decode, encode_valid
from .db import DatabaseUnavailable, driver_cursor, is_sqlite, safe_url, write_transaction
from .schema import event_table
from .types import AnyEvent, Event, event_scope, event_tag

#: PostgreSQL NOTIFY channel: a hint that new events were committed (readers re-read the table).
CHANNEL = "pubsub_cache_event"

#: How often a waiter on SQLite looks for commits made by other processes.
SQLITE_POLL_SECONDS = 0.02

#: The longest a PostgreSQL waiter listens before it looks at the table (and at its stop flag).
PG_WAIT_SLICE_SECONDS = 0.25

#: Seconds to open the LISTEN connection before the database counts as unreachable.
LISTEN_CONNECT_TIMEOUT = 5


class AppendTimeout(PubsubCacheError):
    """Raised when an append could not take the log's write lock within the lock timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"could not append to the event log: its write lock was not free within {seconds:g} s"
        )


class Recorded(msgspec.Struct, frozen=True):
    """An event as stored: its position, when it was appended (Unix time), and the event."""

    position: int
    recorded_at: float
    event: AnyEvent


class RawRecord(msgspec.Struct, frozen=True, array_like=True):
    """A stored row, undecoded: for export, compaction and fast scans."""

    position: int
    account: str
    service: str
    node: str
    type: str
    recorded_at: float
    body: bytes


class EventLog:
    """The event log stored in one database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, lock_timeout: float = 10.0) -> None:
        self._engine = engine
        self._lock_timeout = lock_timeout
        self._sqlite = is_sqlite(engine)
        self._appended = threading.Condition()
        self._listener: Any = None
        self._listener_lock = threading.Lock()
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The engine the log is stored in."""
        return self._engine

    def append(self, events: Iterable[Event]) -> list[int]:
        """Append ``events`` in one transaction; returns their positions, in order.

        Every event is validated first: if one is invalid, :class:`InvalidEvent` is raised and
        nothing of the batch is written.
        """
        batch = list(events)
        if not batch:
            return []
        rows = _rows(batch, encode_valid(batch))
        with write_transaction(self._engine) as connection:
            positions = self._insert(connection, rows)
        self._wake_local()
        _count(rows)
        return positions

    def append_in(self, connection: Connection, events: Iterable[Event]) -> list[int]:
        """Append ``events`` inside the caller's transaction (begun with ``write_transaction``).

        The caller commits; positions become visible then. Waiters in this process are woken
        by the next :meth:`append` or by polling, not by this call.
        """
        batch = list(events)
        if not batch:
            return []
        rows = _rows(batch, encode_valid(batch))
        positions = self._insert(connection, rows)
        _count(rows)  # counted when written: a rollback by the caller is rare
        return positions

    def _insert(self, connection: Connection, rows: list[tuple[Any, ...]]) -> list[int]:
        if self._sqlite:
            # The write lock is held since BEGIN IMMEDIATE, so AUTOINCREMENT hands this batch
            # consecutive rowids, in the order of the VALUES rows: the last one tells them all,
            # without RETURNING per row. Multi-row VALUES through the driver: one statement
            # step per _SQLITE_ROWS rows is 1.1-1.2x the rate of executemany's step per row, and
            # Core's per-row parameter processing would cost a quarter of it (bench append).
            for start in range(0, len(rows), _SQLITE_ROWS):
                part = rows[start : start + _SQLITE_ROWS]
                values = tuple(itertools.chain.from_iterable(part))
                # As a list of one: SQLAlchemy's executemany path is ~30 us cheaper per call
                # than its single execute, which prepares a result (measured, batches of 1).
                connection.exec_driver_sql(_sqlite_insert(len(part)), [values])
            last = connection.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
            return list(range(last - len(rows) + 1, last + 1))
        try:
            return _insert_postgres(connection, rows, self._lock_timeout)
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise AppendTimeout(self._lock_timeout) from exc
            raise

    def read(self, *, after: int = 0, limit: int = 1000) -> list[Recorded]:
        """Up to ``limit`` events with a position above ``after``, in position order."""
        query = (
            sa.select(event_table.c.position, event_table.c.recorded_at, event_table.c.body)
            .where(event_table.c.position > after)
            .order_by(event_table.c.position)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            Recorded(position, recorded_at, decode(body, position=position))
            for position, recorded_at, body in rows
        ]

    def read_raw(self, *, after: int = 0, limit: int = 1000) -> list[RawRecord]:
        """Like :meth:`read`, without decoding the events."""
        with self._engine.connect() as connection:
            return read_raw_in(connection, after=after, limit=limit)

    def head(self) -> int:
        """The highest position committed so far (0 for an empty log)."""
        with self._engine.connect() as connection:
            return head_in(connection)

    def wait(self, *, after: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until an event above ``after`` is committed or ``timeout`` seconds pass.

        Returns whether there is one. Appends made through this object wake the waiter at
        once; other processes' are seen through PostgreSQL NOTIFY (a hint: the table is re-read)
        or, on SQLite, by a cheap check every few milliseconds. Setting ``stop`` ends the wait
        within a fraction of a second (a thread waiting here can thus be shut down cleanly).

        A database that cannot be read raises (an error of :data:`.outage.UNAVAILABLE`); the
        caller decides how long to wait before it asks again.
        """
        deadline = time.monotonic() + timeout
        while stop is None or not stop.is_set():
            if self.head() > after:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._sqlite:
                with self._appended:
                    self._appended.wait(min(remaining, SQLITE_POLL_SECONDS))
            else:
                self._wait_notify(min(remaining, PG_WAIT_SLICE_SECONDS))
        return False

    def close(self) -> None:
        """Release the PostgreSQL listening connection, if one was opened."""
        with self._listener_lock:
            self._closed = True
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _wake_local(self) -> None:
        with self._appended:
            self._appended.notify_all()

    def _wait_notify(self, seconds: float) -> None:
        import psycopg

        if self._closed:
            # A waiter left running after close() (an abandoned thread) must not reopen.
            time.sleep(seconds)
            return
        if self._listener is None:
            self._listen()
            return  # listening now: the caller re-checks the head before waiting
        with self._listener_lock:
            if self._listener is None:  # closed meanwhile
                return
            try:
                for _notify in self._listener.notifies(timeout=seconds, stop_after=1):
                    pass
            except psycopg.Error:
                # The connection was lost (an outage): the caller's next look at the head says
                # whether the database is back; the next wait opens a new listener.
                self._listener.close()
                self._listener = None

    def _listen(self) -> None:
        import psycopg

        url = self._engine.url.set(drivername="postgresql")
        # Connected outside the lock, so that close() (called from an event loop) never waits
        # for a connection attempt; bounded, so that a silent network cannot hold the thread.
        try:
            listener = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                connect_timeout=LISTEN_CONNECT_TIMEOUT,
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailable(safe_url(self._engine.url), _reason(exc)) from exc
        try:
            listener.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            listener.close()
            raise DatabaseUnavailable(safe_url(self._engine.url), _reason(exc)) from exc
        with self._listener_lock:
            if self._closed or self._listener is not None:
                listener.close()
            else:
                self._listener = listener


def read_raw_in(connection: Connection, *, after: int, limit: int) -> list[RawRecord]:
    """Undecoded rows above ``after``, in position order, read on ``connection``."""
    query = (
        sa.select(*event_table.c)
        .where(event_table.c.position > after)
        .order_by(event_table.c.position)
        .limit(limit)
    )
    return [RawRecord(*row) for row in connection.execute(query)]


def head_in(connection: Connection) -> int:
    """The highest committed position, read on ``connection``."""
    value = connection.execute(sa.select(sa.func.max(event_table.c.position))).scalar()
    return int(value or 0)


_COLUMNS = ("account", "service", "node", "type", "recorded_at", "body")
#: Rows per SQLite INSERT: 166 rows bind 996 parameters, within the 999 of SQLite before 3.32.
_SQLITE_ROWS = 999 // len(_COLUMNS)


@functools.cache
def _sqlite_insert(count: int) -> str:
    """The INSERT of ``count`` events, 1 to ``_SQLITE_ROWS`` (so at most that many cached)."""
    row = f"({', '.join('?' * len(_COLUMNS))})"
    return f"INSERT INTO event ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * count)}"


_PG_INSERT = (
    f"INSERT INTO event ({', '.join(_COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s) RETURNING position"
)
_PG_LOCK = "SET LOCAL lock_timeout = {milliseconds}; LOCK TABLE event IN EXCLUSIVE MODE"
#: Draws ``count`` positions at once: moves the sequence to the last and returns it.
_PG_DRAW = (
    "SELECT setval(s::regclass, nextval(s::regclass) + {count} - 1) "
    "FROM pg_get_serial_sequence('event', 'position') AS s"
)
_PG_COPY = f"COPY event (position, {', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_TYPES = ("int8", "text", "text", "text", "varchar", "float8", "bytea")


def _insert_postgres(
    connection: Connection, rows: list[tuple[Any, ...]], lock_timeout: float
) -> list[int]:
    """Take the log's lock, draw positions under it, write ``rows``; returns their positions.

    The lock is the one of invariant 1 (module docstring), taken before any position is drawn
    and held to commit. A batch draws its positions with one ``setval`` (nobody else can draw
    while the lock is held) and is written by a binary COPY: SQLAlchemy's multi-row INSERT
    with RETURNING, which this replaced, ran at 0.3x a raw ``executemany`` because psycopg
    parsed its thousands of parameters again for every batch; COPY runs above it
    (ops/bench/append.py). NOTIFY is queued with the lock: PostgreSQL delivers it at commit.
    The lock, NOTIFY and the draw go in one round trip (several statements, no parameters).
    """
    prelude = _PG_LOCK.format(milliseconds=max(1, int(lock_timeout * 1000)))
    prelude += f"; NOTIFY {CHANNEL}"
    with driver_cursor(connection, "append to the event log") as cursor:
        if len(rows) == 1:
            cursor.execute(prelude)
            cursor.execute(_PG_INSERT, rows[0])
            return [cursor.fetchone()[0]]
        cursor.execute(f"{prelude}; {_PG_DRAW.format(count=len(rows))}")
        while cursor.description is None and cursor.nextset():
            pass  # the results of the lock and NOTIFY come first
        last: int = cursor.fetchone()[0]
        first = last - len(rows) + 1
        with cursor.copy(_PG_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            for position, row in enumerate(rows, start=first):
                copy.write_row((position, *row))
        return list(range(first, last + 1))


def _reason(exc: Exception) -> str:
    """The driver's first line: psycopg's messages go on with hints."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _count(rows: list[tuple[Any, ...]]) -> None:
    """Tell the telemetry the appended events by type (one call per append)."""
    counting = telemetry.current()
    if counting.enabled:
        counting.appended(Counter(row[3] for row in rows))


def _rows(events: Sequence[Event], bodies: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """The stored columns of each event, in the order of ``_COLUMNS``."""
    now = time.time()
    return [
        (event.account, *event_scope(event), event_tag(event), now, body)
        for event, body in zip(events, bodies, strict=True)
    ]
