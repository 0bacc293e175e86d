"""Live fallback on both databases, with a fake XMPP service at the boundary: which reads go live,
how live answers are shaped, sync requests, NotCached, and the mapping of XMPP errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyio.from_thread import start_blocking_portal
from query_helpers import ACCOUNT, NODE, SERVICE, FakeService, ReadModelRows, sync_requests
from sqlalchemy.engine import Engine

from helpers import atom
from pubsub_cache.events import Item
from pubsub_cache.events.log import EventLog
from pubsub_cache.query import (
    BlockingQuery,
    LiveFetchError,
    LiveFetchTimeout,
    NotCached,
    PageItem,
    Query,
    RsmRequest,
    RsmResult,
)
from pubsub_cache.xmpp.errors import XmppRequestError, XmppTimeout

pytestmark = pytest.mark.anyio

MICROBLOG = "urn:xmpp:microblog:0"


@pytest.fixture
def rows(engine: Engine) -> ReadModelRows:
    return ReadModelRows(engine)


def served(*item_ids: str) -> list[Item]:
    return [Item(id=i, publisher=SERVICE, payload=f"<p xmlns='urn:test'>{i}</p>") for i in item_ids]


def ids(items: list[PageItem]) -> list[str]:
    return [item.id for item in items]


async def test_an_unsynced_node_is_read_live_and_shaped_like_a_cached_page(
    engine: Engine, rows: ReadModelRows
) -> None:
    rows.items(rows.node(sync_state="NONE", to_sync=False), ["stale"])
    service = FakeService(items=served("a", "b", "c", "d", "e"))

    async with Query.open(engine, client=service) as query:
        newest = await query.get_items(ACCOUNT, SERVICE, NODE, max_items=2)
        last = await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, before=""))
        after = await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, after="a"))
        chosen = await query.get_items(ACCOUNT, SERVICE, NODE, item_ids=["e", "b"])

    assert ids(newest.items) == ["d", "e"]
    assert newest.rsm == RsmResult("d", "e", 0, 2)
    assert (newest.from_cache, newest.complete) == (False, True)
    assert newest.items[0].payload == "<p xmlns='urn:test'>d</p>"
    assert last.rsm == RsmResult("d", "e", 3, 5)
    assert ids(after.items) == ["b", "c"]
    assert after.rsm == RsmResult("b", "c", 1, 5)
    assert ids(chosen.items) == ["b", "e"]


async def test_live_answers_in_publication_order_are_parsed_like_the_projector_parses(
    engine: Engine,
) -> None:
    items = [
        Item(id="late", payload=atom("Late", published="2026-03-01T00:00:00Z")),
        Item(id="early", payload=atom("Early", published="2026-01-01T00:00:00Z")),
        Item(id="middle", payload=atom("Middle", published="2026-02-01T00:00:00Z")),
    ]
    async with Query.open(engine, client=FakeService(items=items)) as query:
        page = await query.get_items(ACCOUNT, SERVICE, "news", order_by="publication")

    assert ids(page.items) == ["early", "middle", "late"]
    assert page.items[0].parsed["title"] == "Early"
    assert page.items[0].published is not None
    assert page.items[0].published.isoformat() == "2026-01-01T00:00:00+00:00"


async def test_a_live_item_that_does_not_parse_says_why_as_a_cached_one_does(
    engine: Engine,
) -> None:
    big = "x" * 1_600_000  # over the parser's size limit
    broken = f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{big}</title></entry>"
    async with Query.open(
        engine, client=FakeService(items=[Item(id="x", payload=broken)])
    ) as query:
        page = await query.get_items(ACCOUNT, SERVICE, "news")

    assert page.items[0].parse_error
    assert page.items[0].as_dict()["parse_error"] == page.items[0].parse_error


async def test_an_id_the_server_lists_twice_takes_its_last_place_and_payload(
    engine: Engine,
) -> None:
    # Prosody 0.12 answers with both publications of a re-published id: the stale one where it
    # was, the last one at the end (it lists by last publication), as the projector reads it.
    twice = [*served("a", "b"), Item(id="a", payload="<p xmlns='urn:test'>a, again</p>")]

    async with Query.open(engine, client=FakeService(items=twice)) as query:
        page = await query.get_items(ACCOUNT, SERVICE, NODE)

    assert ids(page.items) == ["b", "a"]
    assert page.items[1].payload == "<p xmlns='urn:test'>a, again</p>"
    assert page.rsm.count == 2


@pytest.mark.parametrize("state", ["NONE", "IN_PROGRESS", "ERROR"])
async def test_without_a_live_session_an_unsynced_node_is_not_cached(
    engine: Engine, rows: ReadModelRows, state: str
) -> None:
    rows.items(rows.node(sync_state=state, to_sync=False), ["a"])

    async with Query.open(engine) as query:
        with pytest.raises(NotCached, match=f"sync state {state}") as raised:
            await query.get_items(ACCOUNT, SERVICE, NODE)
        with pytest.raises(NotCached):
            await query.get_item(ACCOUNT, SERVICE, NODE, "a")
        with pytest.raises(NotCached, match="never seen"):
            await query.get_items(ACCOUNT, SERVICE, "unknown")

    assert (raised.value.service, raised.value.node) == (SERVICE, NODE)
    assert not raised.value.sync_requested


async def test_the_first_read_of_a_node_to_sync_records_one_sync_request(
    engine: Engine, event_log: EventLog
) -> None:
    service = FakeService(items=[Item(id="1", payload=atom("One"))])

    async with Query.open(engine, client=service, event_log=event_log) as query:
        first = await query.get_items(ACCOUNT, SERVICE, MICROBLOG)
        second = await query.get_items(ACCOUNT, SERVICE, MICROBLOG)
        other = await query.get_items(ACCOUNT, SERVICE, "not-a-blog")

    assert (first.from_cache, first.sync_requested, second.sync_requested) == (False, True, True)
    assert not other.sync_requested
    (request,) = sync_requests(event_log)
    assert (request.account, request.service, request.node) == (ACCOUNT, SERVICE, MICROBLOG)


async def test_a_read_without_a_session_still_asks_for_a_node_to_sync(
    engine: Engine, event_log: EventLog, rows: ReadModelRows
) -> None:
    rows.node("urn:xmpp:microblog:0", sync_state="NONE", to_sync=True)
    rows.node("pending", sync_state="NONE", to_sync=True, sync_requested=True)

    async with Query.open(engine, event_log=event_log) as query:
        with pytest.raises(NotCached, match="a sync was requested") as raised:
            await query.get_items(ACCOUNT, SERVICE, MICROBLOG)
        with pytest.raises(NotCached) as pending:
            await query.get_items(ACCOUNT, SERVICE, "pending")

    assert raised.value.sync_requested
    assert pending.value.sync_requested
    assert [r.node for r in sync_requests(event_log)] == [MICROBLOG]


async def test_a_live_read_that_times_out_raises_live_fetch_timeout(engine: Engine) -> None:
    slow = FakeService(items=served("a"), delay=5)
    lost = FakeService(error=XmppTimeout("get items", service=SERVICE, node=NODE, seconds=1))

    async with Query.open(engine, client=slow, live_timeout=0.1) as query:
        with pytest.raises(LiveFetchTimeout, match=f"node '{NODE}' of {SERVICE}"):
            await query.get_items(ACCOUNT, SERVICE, NODE)
    async with Query.open(engine, client=lost) as query:
        with pytest.raises(LiveFetchTimeout):
            await query.get_item(ACCOUNT, SERVICE, NODE, "a")


async def test_an_xmpp_error_is_live_fetch_error_carrying_its_condition(engine: Engine) -> None:
    error = XmppRequestError("get items", service=SERVICE, node=NODE, condition="item-not-found")

    async with Query.open(engine, client=FakeService(error=error)) as query:
        with pytest.raises(LiveFetchError) as raised:
            await query.get_items(ACCOUNT, SERVICE, NODE)

    assert raised.value.condition == "item-not-found"
    assert "item-not-found" in str(raised.value)


async def test_a_session_of_another_account_is_never_used_for_a_read(engine: Engine) -> None:
    theirs = FakeService(jid="mercutio@verona.lit", items=served("a"))

    async with Query.open(engine, client=theirs) as query:
        with pytest.raises(NotCached, match=r"the live session is mercutio@verona\.lit's"):
            await query.get_items(ACCOUNT, SERVICE, NODE)

    assert theirs.requests == []


async def test_a_partial_node_answers_from_the_cache_only_what_it_holds(
    engine: Engine, rows: ReadModelRows
) -> None:
    # The server holds a..f; the partial sync missed the oldest two.
    rows.items(rows.node(sync_state="PARTIAL"), ["c", "d", "e", "f"])
    service = FakeService(items=served("a", "b", "c", "d", "e", "f"))
    cached: list[tuple[dict[str, object], list[str], RsmResult]] = [
        ({"max_items": 3}, ["d", "e", "f"], RsmResult("d", "f", 0, 3)),
        ({"rsm": RsmRequest(max=2, before="")}, ["e", "f"], RsmResult("e", "f")),
        ({"rsm": RsmRequest(max=2, after="c")}, ["d", "e"], RsmResult("d", "e")),
        ({"rsm": RsmRequest(max=2, before="e")}, ["c", "d"], RsmResult("c", "d")),
        ({"item_ids": ["c", "e"]}, ["c", "e"], RsmResult("c", "e", 0, 2)),
    ]
    live: list[tuple[dict[str, object], list[str]]] = [
        ({"rsm": RsmRequest(max=2)}, ["a", "b"]),  # the oldest: what is missing
        ({"rsm": RsmRequest(max=2, before="d")}, ["b", "c"]),  # reaches past the cached ones
        ({"rsm": RsmRequest(max=0)}, []),  # the count
        ({"max_items": 5}, ["b", "c", "d", "e", "f"]),
        ({"item_ids": ["a", "c"]}, ["a", "c"]),
        ({"order_by": "publication"}, ["a", "b", "c", "d", "e", "f"]),
    ]

    async with Query.open(engine, client=service) as query:
        for request, expected_ids, expected_rsm in cached:
            page = await query.get_items(ACCOUNT, SERVICE, NODE, **request)  # type: ignore[arg-type]
            assert (ids(page.items), page.from_cache, page.rsm) == (
                expected_ids,
                True,
                expected_rsm,
            ), request
        assert service.requests == []
        for request, expected_ids in live:
            page = await query.get_items(ACCOUNT, SERVICE, NODE, **request)  # type: ignore[arg-type]
            assert (ids(page.items), page.from_cache) == (expected_ids, False), request
        assert len(service.requests) == len(live)
        assert await query.get_item(ACCOUNT, SERVICE, NODE, "c") is not None
        assert len(service.requests) == len(live)
        missing = await query.get_item(ACCOUNT, SERVICE, NODE, "a")

    assert missing is not None
    assert missing.payload == "<p xmlns='urn:test'>a</p>"
    assert len(service.requests) == len(live) + 1


@pytest.fixture
def portal_query(engine: Engine) -> Iterator[BlockingQuery]:
    with start_blocking_portal("asyncio") as portal:
        query = BlockingQuery(engine, client=FakeService(items=served("x", "y")), portal=portal)
        yield query
        query.close()


def test_the_blocking_facade_reads_live_through_its_portal(
    rows: ReadModelRows, portal_query: BlockingQuery
) -> None:
    rows.node(sync_state="NONE", to_sync=False)

    page = portal_query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=1, before=""))
    item = portal_query.get_item(ACCOUNT, SERVICE, NODE, "x")

    assert (ids(page.items), page.from_cache) == (["y"], False)
    assert item is not None
    assert item.id == "x"


def test_the_blocking_facade_without_a_session_raises_not_cached(
    rows: ReadModelRows, engine: Engine
) -> None:
    rows.node(sync_state="NONE", to_sync=False)
    with BlockingQuery.open(engine) as query, pytest.raises(NotCached):
        query.get_items(ACCOUNT, SERVICE, NODE)
