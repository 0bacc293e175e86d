"""One append task for every account of a daemon (issue 13, fan-out latency), against the real
Prosody on both databases: a publication fanned out to many accounts goes to the log in a few
transactions, an account that stops leaves the others appending, and a slot an account holds
(a reply not parsed yet, or never) holds back that account's events only."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import published
from pubsub_cache.events.db import is_sqlite, write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import Item, SyncFailed
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.schema import ingest_lease
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.fetcher import PayloadFetcher
from pubsub_cache.xmpp.pubsub import ItemsReply
from pubsub_cache.xmpp.sync import sync_node, utc_now
from pubsub_cache.xmpp.writer import EventWriter, GroupCommit
from xmpp_fixtures import FAST, Connect, cached_items, eventually, holding, idle, serving

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

#: Accounts subscribed to the fanned-out node (test_accounts.py's figure).
MANY = 20

#: No reconciliation after a publication: its listing (a slot and an event in each account's
#: queue, an append) comes at a time set by the projector's lag, which these tests cannot count on.
NO_CHECKS = dataclasses.replace(
    FAST, reconcile=dataclasses.replace(FAST.reconcile, after_publish=3600.0)
)


def entry(title: str) -> str:
    return f'<entry xmlns="http://www.w3.org/2005/Atom"><title>{title}</title></entry>'


async def test_a_publication_fanned_out_to_many_accounts_is_a_few_transactions(
    prosody: LocalProsody, publisher: PubsubClient, engine: Engine, node_name: str
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    async with serving(prosody, engine, MANY, service, node_name, options=NO_CHECKS) as (
        pool,
        accounts,
    ):
        await idle(pool)
        appended, batches = pool.commit.appended, pool.commit.batches
        writers = [ingest.writer for ingest in pool.ingests.values()]

        with log_locked(engine):  # an append waits: the notifications arrive behind it
            await publisher.publish(service, node_name, "a", entry("fanned out"))
            await eventually(lambda: all(writer.pending == 1 for writer in writers))
        await eventually(holding(engine, accounts, service, node_name, "a"))

        assert pool.commit.appended - appended == MANY  # every account's notification
        # The append that waited for the lock, then one for everything queued meanwhile
        # (however the notifications and that first append were scheduled), not one per account.
        assert pool.commit.batches - batches <= 2
        assert all(writer.shared for writer in writers)


@contextmanager
def log_locked(engine: Engine) -> Iterator[None]:
    """Hold the log's write lock (as another appender would) during the block."""
    with write_transaction(engine) as holder:  # SQLite: BEGIN IMMEDIATE
        if not is_sqlite(engine):
            holder.exec_driver_sql("LOCK TABLE event IN EXCLUSIVE MODE")
        yield


async def test_an_account_removed_by_a_reload_leaves_the_others_appending(
    prosody: LocalProsody, publisher: PubsubClient, engine: Engine, node_name: str
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    async with serving(prosody, engine, 3, service, node_name) as (pool, accounts):
        gone, *kept = accounts
        removed = pool.ingests[gone.jid]
        removed.writer.submit([published("last words", account=gone.jid)])

        assert pool.update(kept) == ([], [gone.jid])
        await eventually(lambda: lease_holders(engine) == {account.jid for account in kept})
        assert removed.writer.pending == 0  # appended before its lease was released

        await publisher.publish(service, node_name, "after", entry("after the reload"))
        await eventually(holding(engine, kept, service, node_name, "after"))
        assert "after" not in cached_items(engine, gone.jid, service, node_name)


def lease_holders(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.select(ingest_lease.c.account)).scalars())


async def test_a_slot_an_account_holds_back_only_its_events_and_is_dropped_when_it_stops(
    prosody: LocalProsody,
    publisher: PubsubClient,
    engine: Engine,
    node_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    async with serving(prosody, engine, 3, service, node_name, options=NO_CHECKS) as (
        pool,
        accounts,
    ):
        stuck, *others = accounts
        pool.commit.shutdown_timeout = 0.5
        writer = pool.ingests[stuck.jid].writer
        writer.reserve()  # a reply arrived and is never parsed (a stuck or buggy request)

        await publisher.publish(service, node_name, "a", entry("while a slot is held"))
        await eventually(lambda: writer.pending == 2)  # its notification, behind the slot
        # Another account's event, appended once the group took everything ready after that
        # notification came:
        witness = pool.ingests[others[0].jid].writer
        witness.submit([published("witness", account=others[0].jid)])
        with anyio.fail_after(5):
            await witness.flush()
        assert writer.pending == 2  # the notification is still held back
        await eventually(holding(engine, others, service, node_name, "a"))
        assert "a" not in cached_items(engine, stuck.jid, service, node_name)

        pool.update(others)  # the account stops: its queue, slot and all, is left
        await eventually(lambda: lease_holders(engine) == {account.jid for account in others})
        assert "1 events not appended (1 reserved slots never filled)" in caplog.text

        await publisher.publish(service, node_name, "b", entry("after it stopped"))
        await eventually(holding(engine, others, service, node_name, "b"))


@asynccontextmanager
async def two_writers(event_log: EventLog) -> AsyncIterator[tuple[EventWriter, EventWriter]]:
    """Two accounts' writers of one running :class:`GroupCommit`."""
    commit = GroupCommit(event_log)
    async with anyio.create_task_group() as group:
        await group.start(commit.run)
        yield commit.writer(), commit.writer()
        group.cancel_scope.cancel()


def cancelling_when_asking(client: PubsubClient, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` as ``client`` sends its next items request: the reply comes after the
    coroutine that awaited it was cancelled."""
    get_items, get_item = client.get_items, client.get_item

    async def get_items_cancelled(*args: Any, **options: Any) -> ItemsReply:
        scope.cancel()  # lands at the wait for the reply, after the request is sent
        return await get_items(*args, **options)

    async def get_item_cancelled(*args: Any, **options: Any) -> Item | None:
        scope.cancel()
        return await get_item(*args, **options)

    client.get_items = get_items_cancelled  # type: ignore[method-assign]
    client.get_item = get_item_cancelled  # type: ignore[method-assign]


async def after_the_reply(client: PubsubClient, service: str, node: str) -> None:
    """Return once the replies to ``client``'s requests sent so far to ``service`` arrived
    (it answers in order)."""
    await client.item_ids(service, node)


async def test_a_sync_cancelled_while_its_page_is_on_the_way_leaves_no_slot_behind(
    prosody: LocalProsody,
    publisher: PubsubClient,
    connect_as: Connect,
    node_name: str,
    engine: Engine,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "old", entry("listed"))
    event_log = EventLog(engine)
    async with connect_as("reader") as reader, two_writers(event_log) as (mine, other):
        with anyio.CancelScope() as scope:
            cancelling_when_asking(reader, scope)
            await sync_node(reader, mine, service, node_name)
        assert scope.cancelled_caught
        await after_the_reply(publisher, service, node_name)
        await after_the_reply(reader, service, node_name)
        other.submit([published("other account")])
        mine.submit([published("mine, after the sync")])
        with anyio.fail_after(5):
            await other.flush()
            await mine.flush()

    events = [record.event for record in event_log.read(after=0)]
    assert any(isinstance(event, SyncFailed) for event in events)
    assert mine.pending == 0
    event_log.close()


async def test_a_payload_fetch_cancelled_or_refused_leaves_no_slot_behind(
    prosody: LocalProsody,
    publisher: PubsubClient,
    connect_as: Connect,
    node_name: str,
    engine: Engine,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "notify-only", entry("fetched"))
    event_log = EventLog(engine)
    async with connect_as("reader") as reader, two_writers(event_log) as (mine, other):
        fetcher = PayloadFetcher(mine, reader.jid, utc_now)
        fetcher.add(NodeRef(service, f"{node_name}-gone"), "refused")  # item-not-found
        async with anyio.create_task_group() as group:
            group.start_soon(fetcher.run, reader)
            await eventually(lambda: fetcher.pending == 0)
            group.cancel_scope.cancel()
        fetcher.add(NodeRef(service, node_name), "notify-only")
        with anyio.CancelScope() as scope:
            cancelling_when_asking(reader, scope)
            await fetcher.run(reader)
        assert scope.cancelled_caught
        await after_the_reply(reader, service, node_name)
        other.submit([published("other account")])
        mine.submit([published("mine, after the fetch")])
        with anyio.fail_after(5):
            await other.flush()
            await mine.flush()

    assert mine.pending == 0
    event_log.close()
