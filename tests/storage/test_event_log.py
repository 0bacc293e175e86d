"""The event log on both databases: append, read, head, wait, and all-or-nothing batches."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import ACCOUNT, NODE, SERVICE, at, published, purged, retracted
from pubsub_cache.events import InvalidEvent, ItemsPublished, NodePurged
from pubsub_cache.events.db import create_engine, is_sqlite, write_transaction
from pubsub_cache.events.log import AppendTimeout, EventLog
from pubsub_cache.events.schema import event_table


def test_an_empty_log_has_head_zero_and_nothing_to_read(event_log: EventLog) -> None:
    assert event_log.head() == 0
    assert event_log.read(after=0) == []


def test_append_returns_consecutive_positions_in_order(event_log: EventLog) -> None:
    first = event_log.append([published("1"), published("2"), retracted("1")])
    second = event_log.append([purged()])
    assert first == [1, 2, 3]
    assert second == [4]
    assert event_log.head() == 4


def test_read_returns_events_after_a_position_in_order(event_log: EventLog) -> None:
    events = [published(str(i), when=i) for i in range(10)]
    event_log.append(events)
    recorded = event_log.read(after=3, limit=4)
    assert [r.position for r in recorded] == [4, 5, 6, 7]
    assert [r.event for r in recorded] == events[3:7]
    assert all(r.recorded_at > 0 for r in recorded)


def test_read_raw_keeps_the_scope_columns(event_log: EventLog) -> None:
    event_log.append([published("1")])
    (raw,) = event_log.read_raw(after=0)
    assert (raw.position, raw.account, raw.service, raw.node, raw.type) == (
        1,
        ACCOUNT,
        SERVICE,
        NODE,
        "items-published",
    )


def test_a_batch_with_an_invalid_event_writes_nothing(event_log: EventLog) -> None:
    event_log.append([published("kept")])
    with pytest.raises(InvalidEvent, match="event 1 of the batch"):
        event_log.append([published("a"), "not an event", published("b")])  # type: ignore[list-item]
    assert event_log.head() == 1
    assert [r.event for r in event_log.read(after=0)] == [published("kept")]


def test_a_failed_transaction_leaves_no_event_behind(event_log: EventLog) -> None:
    def crash_before_commit() -> None:
        with write_transaction(event_log.engine) as connection:
            event_log.append_in(connection, [published("1"), published("2")])
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    assert event_log.head() == 0
    assert event_log.append([purged()]) in ([1], [3])  # PostgreSQL sequences skip, never reuse


def test_positions_are_never_reused_after_the_newest_events_are_deleted(
    event_log: EventLog,
) -> None:
    event_log.append([published(str(i)) for i in range(5)])
    with write_transaction(event_log.engine) as connection:
        connection.execute(sa.delete(event_table).where(event_table.c.position > 2))
    assert event_log.append([purged()]) == [6]


def test_wait_returns_at_once_when_events_are_already_there(event_log: EventLog) -> None:
    event_log.append([purged()])
    assert event_log.wait(after=0, timeout=0)  # no time to wait at all: the event is there


def test_wait_times_out_when_nothing_arrives(event_log: EventLog) -> None:
    assert not event_log.wait(after=0, timeout=0.1)


class HeadChecks:
    """Counts the log-head queries each thread runs on ``engine``. A waiter that has looked at
    the head twice is waiting: on PostgreSQL its LISTEN was issued between the two looks (the
    first wait slice opens the listener), on SQLite it polls."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._seen: Counter[int] = Counter()
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        if "max(event.position)" in args[2]:
            self._seen[threading.get_ident()] += 1

    def of(self, thread: threading.Thread) -> int:
        return self._seen[thread.ident or 0]

    def close(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._count)


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Block until ``check()`` holds (an observed condition, never a fixed delay)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_wait_wakes_when_another_process_appends(engine: sa.Engine) -> None:
    # Two EventLog objects stand for two processes: no in-process wake-up between them.
    waiter, writer = EventLog(engine), EventLog(engine)
    woke = threading.Event()
    checks = HeadChecks(engine)

    def wait() -> None:
        if waiter.wait(after=0, timeout=10):
            woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    until(lambda: checks.of(thread) >= 2)  # waiting (listening) before the append
    writer.append([purged()])
    thread.join(timeout=10)
    checks.close()
    waiter.close()
    writer.close()
    assert woke.is_set()


def test_an_append_that_cannot_take_the_write_lock_times_out_and_a_retry_succeeds(
    engine: sa.Engine,
) -> None:
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: SQLite serialises writers with BEGIN IMMEDIATE")
    log = EventLog(engine, lock_timeout=0.1)
    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE event IN EXCLUSIVE MODE")  # another appender's lock
        with pytest.raises(AppendTimeout, match=r"not free within 0\.1 s"):
            log.append([published("1")])
        holder.rollback()
    assert log.append([published("1")]) == [1]
    assert [record.event for record in log.read()] == [published("1")]


def listening_backends(engine: sa.Engine, application: str) -> set[int]:
    """The PostgreSQL backends of ``application`` that last ran a LISTEN."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = :name AND query LIKE 'LISTEN %'"
            ),
            {"name": application},
        )
        return {row.pid for row in rows}


def test_a_dropped_listen_connection_is_opened_again_and_still_wakes_the_waiter(
    engine: sa.Engine,
) -> None:
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: LISTEN/NOTIFY")
    application = f"waiter-{uuid.uuid4().hex[:12]}"
    # The waiter's own engine names its connections, its LISTEN connection included.
    named = create_engine(
        engine.url.update_query_dict({"application_name": application}).render_as_string(
            hide_password=False
        )
    )
    waiter, writer = EventLog(named), EventLog(engine)
    woke = threading.Event()

    def wait() -> None:
        if waiter.wait(after=0, timeout=20):
            woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        until(lambda: len(listening_backends(engine, application)) == 1)
        [dropped] = listening_backends(engine, application)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
        until(lambda: listening_backends(engine, application) - {dropped} != set())
        assert thread.is_alive()  # the waiter rode it out and listens on a new connection
        writer.append([purged()])
        thread.join(timeout=10)
        assert woke.is_set()
    finally:
        waiter.close()
        writer.close()
        thread.join(timeout=10)
        named.dispose()


def test_sqlite_file_is_in_wal_mode(event_log: EventLog) -> None:
    if not is_sqlite(event_log.engine):
        pytest.skip("SQLite only")
    with event_log.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_events_of_every_shape_survive_storage(event_log: EventLog) -> None:
    events = [
        published("1", payload=None),
        ItemsPublished(
            account=ACCOUNT,
            service=SERVICE,
            node="ünïcødé/node ✓",
            observed_at=at(0),
            items=[published("x").items[0]],
        ),
        NodePurged(account="other@example.org", service=SERVICE, node=NODE, observed_at=at(1)),
    ]
    event_log.append(events)
    assert [r.event for r in event_log.read(after=0)] == events
