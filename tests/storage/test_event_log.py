"""The event log on both databases: append, read, head, wait, and all-or-nothing batches."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from helpers import ACCOUNT, NODE, SERVICE, at, published, purged, retracted
from pubsub_cache.events import InvalidEvent, ItemsPublished, NodePurged
from pubsub_cache.events.db import is_sqlite, write_transaction
from pubsub_cache.events.log import EventLog
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


def test_wait_wakes_when_another_process_appends(engine: sa.Engine) -> None:
    # Two EventLog objects stand for two processes: no in-process wake-up between them.
    waiter, writer = EventLog(engine), EventLog(engine)
    woke = threading.Event()

    def wait() -> None:
        if waiter.wait(after=0, timeout=10):
            woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    writer.append([purged()])
    thread.join(timeout=10)
    waiter.close()
    writer.close()
    assert woke.is_set()


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
