"""Appending batches: the positions returned are the stored ones, in order, on both databases.

On PostgreSQL a batch draws its positions at once under the log's lock and is written by COPY
(events/log.py); these tests pin what that must keep: every event stored once with the
position ``append`` returned, the same bytes read back, positions that go on increasing
across single appends, batches, a rolled-back batch and an import with explicit positions.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers import published
from pubsub_cache.events.db import is_sqlite, write_transaction
from pubsub_cache.events.log import AppendTimeout, EventLog, RawRecord
from pubsub_cache.events.transfer import import_log


def stored_positions(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT position FROM event ORDER BY position")
        return [row[0] for row in rows]


def test_a_batch_is_stored_at_the_positions_append_returned(event_log: EventLog) -> None:
    events = [published(f"item-{n}", payload=f"<p>{n}</p>") for n in range(1500)]

    positions = event_log.append(events)

    assert positions == list(range(1, 1501))
    assert stored_positions(event_log.engine) == positions
    records = event_log.read(limit=2000)
    assert [record.position for record in records] == positions
    assert [record.event for record in records] == events


def test_positions_go_on_increasing_across_single_appends_and_batches(
    event_log: EventLog,
) -> None:
    first = event_log.append([published("a")])
    batch = event_log.append([published(f"b{n}") for n in range(10)])
    single = event_log.append([published("c")])
    second_batch = event_log.append([published("d"), published("e")])

    returned = first + batch + single + second_batch
    assert returned == sorted(set(returned))
    assert stored_positions(event_log.engine) == returned
    assert event_log.head() == returned[-1]


def test_a_rolled_back_batch_leaves_no_row_and_later_positions_stay_above(
    event_log: EventLog,
) -> None:
    engine = event_log.engine
    kept = event_log.append([published("kept")])
    lost: list[int] = []

    def append_then_fail() -> None:
        with write_transaction(engine) as connection:
            lost.extend(event_log.append_in(connection, [published("x"), published("y")]))
            raise RuntimeError("the caller fails before commit")

    with pytest.raises(RuntimeError):
        append_then_fail()

    after = event_log.append([published("after-1"), published("after-2")])

    assert stored_positions(engine) == kept + after
    assert after[0] > kept[-1]
    assert not set(after) & set(lost) or is_sqlite(engine)  # SQLite may reuse rolled-back rowids


def test_appends_after_an_import_with_explicit_positions_continue_above_it(
    event_log: EventLog,
) -> None:
    engine = event_log.engine
    event_log.append([published("before")])
    imported = [  # rows as an export gives them (an import does not decode the bodies)
        RawRecord(100 + n, "romeo@montague.lit", "pubsub.shakespeare.lit", "blog", "t", 0.0, b"")
        for n in range(3)
    ]
    assert import_log(engine, iter(imported)) == 3

    positions = event_log.append([published("one")]) + event_log.append(
        [published("two"), published("three")]
    )

    assert positions == [103, 104, 105]


def test_a_batch_that_cannot_take_the_write_lock_times_out_and_writes_nothing(
    engine: sa.Engine,
) -> None:
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: SQLite serialises writers with BEGIN IMMEDIATE")
    log = EventLog(engine, lock_timeout=0.1)
    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE event IN EXCLUSIVE MODE")  # another appender's lock
        with pytest.raises(AppendTimeout):
            log.append([published("1"), published("2")])
        holder.rollback()
    assert stored_positions(engine) == []
    assert len(log.append([published("1"), published("2")])) == 2
    log.close()
