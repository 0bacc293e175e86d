"""Engines for SQLite and PostgreSQL, configured the way the event log's invariants need.

SQLite: WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at checkpoints,
never corrupt), a busy timeout, and transactions that we begin ourselves: pysqlite's own
implicit BEGIN is turned off so that a writing transaction can start with ``BEGIN IMMEDIATE``
and take the write lock up front. A deferred transaction that reads and then writes can fail
with SQLITE_BUSY when another writer got there first; an immediate one waits its turn instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from pubsub_cache.errors import PubsubCacheError

#: Execution option asking for a transaction that takes the write lock when it begins.
WRITE = "pubsub_cache_write"

#: Seconds to open a PostgreSQL connection (unless the URL sets ``connect_timeout``).
CONNECT_TIMEOUT = 10


class DatabaseUnavailable(PubsubCacheError):
    """Raised when the database cannot be opened or reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot open the database {url}: {reason}")


def normalise_url(url: str | URL) -> URL:
    """``url`` with the driver we use made explicit (``postgresql://`` means psycopg 3)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """``url`` with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL); connects lazily."""
    parsed = normalise_url(url)
    # JSON columns (the parsed payloads) go through msgspec: several times faster than json.
    kwargs.setdefault("json_serializer", _json_text)
    kwargs.setdefault("json_deserializer", msgspec.json.decode)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "connect_timeout" not in parsed.query:
        # libpq waits for ever by default: a database behind a silent network would hold a
        # worker thread (and a daemon's shutdown, which waits for its threads) for minutes.
        kwargs["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT,
            **kwargs.get("connect_args", {}),
        }
    return sa.create_engine(parsed, **kwargs)


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    # Leave transaction control to us (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 30000")
        # Before anything is written (a no-op on an existing file): an item row (~2.4 kB) fits
        # once in a 4 kB page, 6 times in 16 kB: 1.4x the logical row on disk, not 2.1x
        # (``pubsub-cache bench disk``).
        cursor.execute("PRAGMA page_size = 16384")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(WRITE):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the write lock on SQLite; commits on success."""
    with engine.connect().execution_options(**{WRITE: True}) as connection, connection.begin():
        yield connection


@contextmanager
def driver_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """The driver's own cursor on ``connection``'s transaction, for what Core cannot say
    (PostgreSQL COPY, several statements in one round trip). Driver errors are raised as
    SQLAlchemy's (``statement`` names the work in them), as Core's own statements raise them,
    so callers and the outage handling see one family of errors."""
    error = connection.dialect.loaded_dbapi.Error
    cursor = connection.connection.cursor()
    try:
        yield cursor
    except error as exc:
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, error, dialect=connection.dialect
        ) from exc
    finally:
        cursor.close()


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether ``engine`` talks to SQLite (as opposed to PostgreSQL)."""
    return engine.dialect.name == "sqlite"


def check_reachable(engine: Engine) -> None:
    """Open one connection; raises :class:`DatabaseUnavailable` with the driver's reason."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(safe_url(engine.url), reason) from exc
    except sa.exc.ArgumentError as exc:
        raise DatabaseUnavailable(safe_url(engine.url), str(exc)) from exc
