"""The ingest's ordered writer on both databases: order, group commit, slots, retries, shutdown."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from helpers import published, retracted
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import Event
from pubsub_cache.xmpp.backoff import Backoff
from pubsub_cache.xmpp.writer import EventWriter

pytestmark = pytest.mark.anyio

FAST_RETRY = Backoff(initial=0.01, cap=0.02)


def item_ids(log: EventLog) -> list[str]:
    """The ids of the items published (or ``-id`` retracted) in the log, in log order."""
    ids: list[str] = []
    for record in log.read(after=0, limit=100_000):
        event: Any = record.event
        if hasattr(event, "items"):
            ids.extend(item.id for item in event.items)
        else:
            ids.extend(f"-{item_id}" for item_id in event.item_ids)
    return ids


class SlowLog:
    """An event log whose appends take ``delay`` seconds and are counted."""

    def __init__(self, log: EventLog, delay: float) -> None:
        self._log = log
        self._delay = delay
        self.batches: list[int] = []
        self.started = 0
        """Appends begun (counted before their delay: an append is running when it moves)."""

    def append(self, events: Iterable[Event]) -> list[int]:
        batch = list(events)
        self.started += 1
        time.sleep(self._delay)
        self.batches.append(len(batch))
        return self._log.append(batch)


class FailingLog:
    """An event log whose first ``failures`` appends raise as a lost database would."""

    def __init__(self, log: EventLog, failures: int) -> None:
        self._log = log
        self.failures = failures
        self.attempts = 0

    def append(self, events: Iterable[Event]) -> list[int]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is gone"))
        return self._log.append(events)


def writer_on(log: object, **options: Any) -> EventWriter:
    return EventWriter(log, retry=FAST_RETRY, **options)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (it looks at what the writer or the log did)."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.001)


async def test_an_idle_writer_appends_at_once_without_being_flushed(event_log: EventLog) -> None:
    writer = writer_on(event_log)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        writer.submit([published("a")])
        await until(lambda: event_log.head() > 0, timeout=2)
        group.cancel_scope.cancel()

    assert item_ids(event_log) == ["a"]


async def test_events_under_load_are_group_committed_in_submission_order(
    event_log: EventLog,
) -> None:
    slow = SlowLog(event_log, delay=0.05)
    writer = writer_on(slow)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        for n in range(200):
            writer.submit([published(f"i{n}")])
            if n % 20 == 0:  # arrivals spread over a few appends: each waits for one to begin
                await until(functools.partial(lambda begun: slow.started > begun, slow.started))
        with anyio.fail_after(10):
            await writer.flush()
        group.cancel_scope.cancel()

    assert item_ids(event_log) == [f"i{n}" for n in range(200)]
    assert sum(slow.batches) == 200
    assert len(slow.batches) < 30  # many events per transaction, not one each
    assert writer.appended == 200
    assert writer.last_position == event_log.head()


async def test_a_reserved_slot_holds_back_what_came_after_it(event_log: EventLog) -> None:
    writer = writer_on(event_log)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        writer.submit([published("before")])
        slot = writer.reserve()
        writer.submit([retracted("page-item")])
        # Everything was queued before the writer ran: its first append stops at the slot.
        await until(lambda: writer.appended > 0)
        assert item_ids(event_log) == ["before"]
        assert writer.pending == 2

        writer.fill(slot, [published("page-item")])
        with anyio.fail_after(5):
            await writer.flush()
        group.cancel_scope.cancel()

    assert item_ids(event_log) == ["before", "page-item", "-page-item"]
    with pytest.raises(RuntimeError, match="already filled"):
        writer.fill(slot, [])


async def test_a_failed_append_is_retried_and_nothing_is_lost_or_doubled(
    event_log: EventLog,
) -> None:
    failing = FailingLog(event_log, failures=3)
    writer = writer_on(failing)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        writer.submit([published("a")])
        writer.submit([published("b")])
        with anyio.fail_after(5):
            await writer.flush()
        group.cancel_scope.cancel()

    assert failing.attempts >= 4
    assert sorted(item_ids(event_log)) == ["a", "b"]
    assert item_ids(event_log) == ["a", "b"]


async def test_cancelling_the_writer_appends_what_is_queued(event_log: EventLog) -> None:
    slow = SlowLog(event_log, delay=0.05)
    writer = writer_on(slow)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        for n in range(50):
            writer.submit([published(f"i{n}")])
        await until(lambda: slow.started > 0)  # the first append is running
        group.cancel_scope.cancel()

    assert item_ids(event_log) == [f"i{n}" for n in range(50)]
    assert writer.pending == 0


async def test_shutdown_gives_up_after_its_timeout_and_says_how_much_was_lost(
    event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingLog(event_log, failures=10**6)
    writer = writer_on(failing, shutdown_timeout=0.2)
    writer.submit([published("a"), published("b")])

    with anyio.fail_after(5):
        await writer.close()

    assert "2 events not appended" in caplog.text
    assert event_log.head() == 0


async def test_flush_without_a_running_writer_appends_by_itself(event_log: EventLog) -> None:
    writer = writer_on(event_log)
    writer.submit([published("a")])
    slot = writer.reserve()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(writer.flush)
            await until(lambda: event_log.head() == 1)  # the flush appended "a" by itself
            writer.fill(slot, [published("b")])

    assert item_ids(event_log) == ["a", "b"]


async def test_an_append_timing_out_on_the_write_lock_is_retried_until_it_is_free(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only: SQLite serialises writers with BEGIN IMMEDIATE")
    log = EventLog(engine, lock_timeout=0.05)
    writer = writer_on(log)
    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE event IN EXCLUSIVE MODE")  # another appender's lock
        async with anyio.create_task_group() as group:
            await group.start(writer.run)
            writer.submit([published("a")])
            await until(lambda: "its write lock was not free" in caplog.text)
            assert writer.pending == 1
            holder.rollback()
            with anyio.fail_after(5):
                await writer.flush()
            group.cancel_scope.cancel()

    assert item_ids(log) == ["a"]
    log.close()
