"""Equivalence against a real Prosody: for random nodes and random request shapes, the cached
answer (node synced with the pager, recorded as events, projected) equals the live answer (the
same request read through the XMPP session): same ids, same payloads, same RSM set."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import slixmpp
from sqlalchemy.engine import Engine

from pubsub_cache.events import AnyEvent, SyncCompleted, SyncPageFetched, SyncStarted
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.query import BlockingQuery, Page, Query, RsmItemNotFound, RsmRequest
from pubsub_cache.xmpp.client import PubsubClient, session
from pubsub_cache.xmpp.pager import fetch_all

pytestmark = [pytest.mark.xmpp]

ATOM = "http://www.w3.org/2005/Atom"
SHAPES_PER_NODE = 40


def random_payload(rng: random.Random, n: int) -> str:
    """An Atom entry (maybe undated, dates often tied) or a foreign payload."""
    if rng.random() < 0.25:
        return f"<data xmlns='urn:test:equivalence' n='{n}'>{rng.random()}</data>"
    stamp = ""
    if rng.random() < 0.8:
        stamp = f"<published>2025-0{rng.randint(1, 4)}-01T00:00:00Z</published>"
    return (
        f"<entry xmlns='{ATOM}'><title>Item {n} {rng.random():.6f}</title>"
        f"<content>body &amp; text {n}</content>{stamp}</entry>"
    )


async def fill_randomly(client: PubsubClient, service: str, node: str, rng: random.Random) -> None:
    """Publish, re-publish and retract at random: the node's own order is the server's business."""
    await client.create_node(service, node, {"max_items": 256})
    alive: set[str] = set()
    for n in range(rng.randint(0, 35)):
        name = f"it-{rng.randint(0, 99):02}"
        await client.publish(service, node, name, random_payload(rng, n))
        alive.add(name)
        if rng.random() < 0.1:
            gone = rng.choice(sorted(alive))
            await client.retract(service, node, gone)
            alive.discard(gone)


async def sync_into(
    log: EventLog, client: PubsubClient, account: str, service: str, node: str
) -> None:
    """What the ingest's sync does: pages as events, then whether it got everything."""
    now = datetime.now(UTC)
    common: dict[str, Any] = {"account": account, "service": service, "node": node, "sync_id": "eq"}
    events: list[AnyEvent] = [SyncStarted(observed_at=now, **common)]
    fetch = fetch_all(client, service, node, page_size=1000)
    async for page in fetch:
        events.append(SyncPageFetched(observed_at=now, items=page.items, page=page.index, **common))
    outcome = fetch.outcome
    events.append(
        SyncCompleted(
            observed_at=now,
            complete=outcome.complete,
            item_count=outcome.item_count,
            reason=outcome.reason,
            **common,
        )
    )
    log.append(events)


def random_shape(rng: random.Random, known: list[str]) -> dict[str, Any]:
    """get_items keyword arguments: an order, maybe ids, maybe max_items, maybe an RSM set."""
    cursors = [*known, "no-such-item"] if known else ["no-such-item"]
    shape: dict[str, Any] = {"order_by": rng.choice(["creation", "modification", "publication"])}
    if rng.random() < 0.25:
        shape["item_ids"] = rng.sample(cursors, k=min(len(cursors), rng.randint(1, 6)))
    if rng.random() < 0.3:
        shape["max_items"] = rng.randint(0, 12)
    kind = rng.choice(["none", "first", "after", "before", "last", "index", "count"])
    size = rng.choice([None, 1, 3, 10])
    if kind == "first":
        shape["rsm"] = RsmRequest(max=size)
    elif kind == "after":
        shape["rsm"] = RsmRequest(max=size, after=rng.choice(cursors))
    elif kind == "before":
        shape["rsm"] = RsmRequest(max=size, before=rng.choice(cursors))
    elif kind == "last":
        shape["rsm"] = RsmRequest(max=size, before="")
    elif kind == "index":
        shape["rsm"] = RsmRequest(max=size, index=rng.randint(0, 40))
    elif kind == "count":
        shape["rsm"] = RsmRequest(max=0)
    return shape


def summary(page: Page) -> tuple[list[tuple[str, str | None, str | None]], Any, bool]:
    return (
        [(item.id, item.publisher, item.payload) for item in page.items],
        page.rsm,
        page.complete,
    )


async def answer(query: Query, account: str, service: str, node: str, shape: dict[str, Any]) -> Any:
    try:
        return await query.get_items(account, service, node, **shape)
    except RsmItemNotFound as error:
        return ("item-not-found", error.item_id)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(6))
async def test_cached_answers_equal_live_answers_for_random_nodes_and_requests(
    seed: int,
    engine: Engine,
    event_log: EventLog,
    prosody: LocalProsody,
    publisher: PubsubClient,
    reader: PubsubClient,
    node_name: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed)
    service, account = prosody.pubsub_service, reader.jid
    await fill_randomly(publisher, service, node_name, rng)
    await sync_into(event_log, reader, account, service, node_name)
    Projector(engine, registry=default_registry()).catch_up()
    live_engine = create_engine(
        sqlite_url(tmp_path / "live.sqlite3")
    )  # knows no node: reads go live
    ensure_schema(live_engine)
    known = [item.id for item in (await reader.get_items(service, node_name)).items]

    async with (
        Query.open(engine, event_log=event_log) as cached,
        Query.open(live_engine, client=reader, event_log=EventLog(live_engine)) as live,
    ):
        pages_with_items = 0
        for _ in range(SHAPES_PER_NODE):
            shape = random_shape(rng, known)
            from_cache = await answer(cached, account, service, node_name, shape)
            from_server = await answer(live, account, service, node_name, shape)
            if isinstance(from_cache, Page) and isinstance(from_server, Page):
                assert from_cache.from_cache
                assert not from_server.from_cache
                assert summary(from_cache) == summary(from_server), shape
                pages_with_items += bool(from_cache.items)
            else:
                assert from_cache == from_server, shape
    live_engine.dispose()
    assert pages_with_items > (SHAPES_PER_NODE // 4 if known else -1)


def test_the_blocking_facade_reads_live_through_a_session_it_opened(
    engine: Engine, prosody: LocalProsody, node_name: str, password: Callable[[str], str]
) -> None:
    service = prosody.pubsub_service
    options: dict[str, Any] = {"host": prosody.host, "port": prosody.port, "tls": "none"}

    async def publish() -> None:
        async with session(
            f"{prosody.jid('publisher')}/fill", password("publisher"), **options
        ) as client:
            await client.create_node(service, node_name)
            for n in range(3):
                await client.publish(service, node_name, f"b{n}", f"<p xmlns='urn:test'>{n}</p>")

    anyio.run(publish)
    reader = prosody.jid("reader")

    def connect() -> AbstractAsyncContextManager[PubsubClient]:
        return session(f"{reader}/blocking", password("reader"), **options)

    with BlockingQuery.open(engine, connect=connect) as query:
        page = query.get_items(reader, service, node_name, rsm=RsmRequest(max=2, before=""))
        item = query.get_item(reader, service, node_name, "b0")

    assert [i.id for i in page.items] == ["b1", "b2"]
    assert not page.from_cache
    assert item is not None
    assert item.payload == '<p xmlns="urn:test">0</p>'


@pytest.mark.anyio
async def test_a_slixmpp_programs_own_session_reads_live(
    engine: Engine,
    prosody: LocalProsody,
    publisher: PubsubClient,
    reader: PubsubClient,
    node_name: str,
) -> None:
    # What a slixmpp program has is a ClientXMPP, not our PubsubClient (issue 14, point 1).
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "one", "<p xmlns='urn:test'>1</p>")
    xmpp = reader.xmpp
    assert isinstance(xmpp, slixmpp.ClientXMPP)

    async with Query(engine, client=xmpp) as query:
        page = await query.get_items(reader.jid, service, node_name)

    assert [item.id for item in page.items] == ["one"]
    assert not page.from_cache
