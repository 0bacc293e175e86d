"""The change feed (issue 14, point 3): the read model's changes, in log order, each handed out
once the projector applied it, resumable from a position, woken by the log; on both databases."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterator

import anyio
import anyio.to_thread
import pytest
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published, purged, retracted
from pubsub_cache.events import NodeDeleted, SyncCompleted, SyncFailed, SyncStarted
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.query import BlockingQuery, Change, Query
from pubsub_cache.query.watch import ChangeFeed

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def projector(engine: Engine) -> Iterator[Projector]:
    projector = Projector(engine, registry=default_registry())
    yield projector
    projector.release()


def summary(change: Change) -> tuple[str, str | None, tuple[str, ...], str | None]:
    return change.kind, change.node, change.item_ids, change.sync_state


async def next_change(changes: AsyncGenerator[Change, None]) -> Change:
    with anyio.fail_after(10):
        return await anext(changes)


async def test_a_change_is_yielded_once_the_projector_applied_it(
    engine: Engine, event_log: EventLog, projector: Projector
) -> None:
    [position] = event_log.append([published("a", "b")])
    feed = ChangeFeed(engine, event_log, ACCOUNT)
    # In the log but not applied: nothing yet (the feed waits for the checkpoint, then gives up).
    assert feed.next(0, timeout=0.05) == ([], 0)
    async with Query(engine, event_log=event_log) as query:
        changes = query.watch(ACCOUNT, after=0)
        reading = anyio.Event()

        async def project() -> None:
            await reading.wait()
            await anyio.to_thread.run_sync(projector.catch_up)

        async with anyio.create_task_group() as group:
            group.start_soon(project)
            reading.set()
            change = await next_change(changes)
        assert change.position == position
        assert summary(change) == ("published", NODE, ("a", "b"), None)
        # Read-your-writes: the cache already holds what the change names.
        answer = await query.cached_items(ACCOUNT, SERVICE, NODE)
        assert answer.node is not None
        assert answer.node.item_count == 2
        await changes.aclose()


async def test_every_kind_of_change_in_log_order_and_resumable(
    engine: Engine, event_log: EventLog, projector: Projector
) -> None:
    positions = event_log.append(
        [
            SyncStarted(
                account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0), sync_id="s"
            ),
            published("a"),
            retracted("a"),
            purged(),
            SyncCompleted(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(1),
                sync_id="s",
                complete=False,
                item_count=0,
            ),
            SyncFailed(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(2),
                sync_id="s",
                error="x",
            ),
            published("x", node="elsewhere"),
            NodeDeleted(account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(3)),
            published("theirs", account="juliet@capulet.lit"),
        ]
    )
    await anyio.to_thread.run_sync(projector.catch_up)
    async with Query(engine, event_log=event_log) as query:
        changes = query.watch(ACCOUNT, SERVICE, NODE, after=0)
        seen = [await next_change(changes) for _ in range(7)]
        await changes.aclose()
        assert [summary(change) for change in seen] == [
            ("sync", NODE, (), "IN_PROGRESS"),
            ("published", NODE, ("a",), None),
            ("retracted", NODE, ("a",), None),
            ("purged", NODE, (), None),
            ("sync", NODE, (), "PARTIAL"),
            ("sync", NODE, (), "ERROR"),
            ("deleted", NODE, (), None),
        ]
        assert [change.position for change in seen] == [*positions[:6], positions[7]]
        # Resumed after the purge: what follows it, nothing before.
        resumed = query.watch(ACCOUNT, SERVICE, NODE, after=positions[3])
        assert (await next_change(resumed)).position == positions[4]
        await resumed.aclose()


async def test_a_new_append_by_another_writer_wakes_the_feed(
    engine: Engine, event_log: EventLog, projector: Projector
) -> None:
    # From now on (after=None): the history before the watch began is not repeated.
    event_log.append([published("old")])
    await anyio.to_thread.run_sync(projector.catch_up)
    other = EventLog(engine)  # another process's log: its appends reach us through the database
    try:
        async with Query(engine, event_log=event_log) as query:
            changes = query.watch(ACCOUNT, SERVICE, NODE)
            waiting = anyio.Event()

            async def publish_later() -> None:
                await waiting.wait()
                await anyio.to_thread.run_sync(other.append, [published("new")])
                await anyio.to_thread.run_sync(projector.catch_up)

            async with anyio.create_task_group() as group:
                group.start_soon(publish_later)
                waiting.set()
                change = await next_change(changes)
            assert summary(change) == ("published", NODE, ("new",), None)
            await changes.aclose()
    finally:
        other.close()


def test_the_blocking_query_gives_a_plain_iterator(
    engine: Engine, event_log: EventLog, projector: Projector
) -> None:
    [first, second] = event_log.append([published("a"), retracted("a")])
    applied = threading.Thread(target=projector.catch_up)
    applied.start()
    with BlockingQuery.open(engine) as query:
        changes = query.watch(ACCOUNT, SERVICE, NODE, after=0)
        assert [(c.position, c.kind) for c in (next(changes), next(changes))] == [
            (first, "published"),
            (second, "retracted"),
        ]
    applied.join()
