"""Cached reads on both databases: pages and XEP-0059 windows, orders, item ids, max_items,
per-account views, node states and read-your-writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_helpers import ACCOUNT, NODE, SERVICE, ReadModelRows
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.projector.schema import projector_checkpoint
from pubsub_cache.query import (
    BlockingQuery,
    InvalidOrder,
    InvalidQuery,
    InvalidRsm,
    PageItem,
    ProjectionTimeout,
    Query,
    RsmItemNotFound,
    RsmRequest,
    RsmResult,
)
from pubsub_cache.query.rsm import window

pytestmark = pytest.mark.anyio

OTHER = "mercutio@verona.lit"


@pytest.fixture
def rows(engine: Engine) -> ReadModelRows:
    return ReadModelRows(engine)


@pytest.fixture
async def query(engine: Engine) -> AsyncIterator[Query]:
    async with Query.open(engine) as opened:
        yield opened


@pytest.fixture
def blocking(engine: Engine) -> Iterator[BlockingQuery]:
    with BlockingQuery.open(engine) as opened:
        yield opened


def ids(items: list[PageItem]) -> list[str]:
    return [item.id for item in items]


def numbered(count: int) -> list[str]:
    return [f"i{n:02}" for n in range(count)]


async def test_the_newest_items_of_a_completed_node_come_from_the_cache(
    rows: ReadModelRows, query: Query
) -> None:
    node_id = rows.node()
    rows.items(node_id, numbered(30))

    page = await query.get_items(ACCOUNT, SERVICE, NODE, max_items=5)

    assert ids(page.items) == ["i25", "i26", "i27", "i28", "i29"]  # oldest first, as Prosody
    assert page.rsm == RsmResult(first="i25", last="i29", index=0, count=5)
    assert page.complete
    assert page.from_cache
    assert page.items[0].payload == "<p xmlns='urn:test'>i25</p>"
    assert page.items[0].publisher == "juliet@capulet.lit"
    assert page.items[0].published is not None
    assert page.items[0].published.tzinfo is not None


async def test_rsm_pages_through_the_node_as_xep_0059_says(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node(), numbered(30))

    async def page(**rsm: object) -> tuple[list[str], RsmResult]:
        answer = await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(**rsm))  # type: ignore[arg-type]
        return ids(answer.items), answer.rsm

    assert await page(max=3) == (["i00", "i01", "i02"], RsmResult("i00", "i02", 0, 30))
    assert await page(max=3, after="i02") == (["i03", "i04", "i05"], RsmResult("i03", "i05", 3, 30))
    assert await page(max=3, before="i03") == (
        ["i00", "i01", "i02"],
        RsmResult("i00", "i02", 0, 30),
    )
    assert await page(max=3, before="i01") == (["i00"], RsmResult("i00", "i00", 0, 30))
    assert await page(max=3, before="") == (["i27", "i28", "i29"], RsmResult("i27", "i29", 27, 30))
    assert await page(max=2, index=10) == (["i10", "i11"], RsmResult("i10", "i11", 10, 30))
    assert await page(max=5, after="i28") == (["i29"], RsmResult("i29", "i29", 29, 30))
    assert await page(max=5, after="i29") == ([], RsmResult(count=30))
    assert await page(max=5, index=40) == ([], RsmResult(count=30))
    assert await page(max=0) == ([], RsmResult(count=30))
    assert (await page(after="i26"))[0] == ["i27", "i28", "i29"]


async def test_an_rsm_cursor_that_is_not_in_the_set_is_item_not_found(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node(), numbered(3))

    with pytest.raises(RsmItemNotFound, match="'nope'"):
        await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, after="nope"))
    with pytest.raises(RsmItemNotFound):
        await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, before="nope"))


async def test_item_ids_restrict_the_set_which_keeps_the_node_order(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node(), numbered(10))

    page = await query.get_items(ACCOUNT, SERVICE, NODE, item_ids=["i07", "i02", "gone", "i05"])

    assert ids(page.items) == ["i02", "i05", "i07"]
    assert page.rsm == RsmResult("i02", "i07", 0, 3)
    assert page.complete


async def test_orders_follow_creation_modification_and_publication(
    rows: ReadModelRows, query: Query
) -> None:
    node_id = rows.node()
    rows.item(node_id, "a", position=1, updated_position=9, published=3)
    rows.item(node_id, "b", position=2, updated_position=2, published=1)
    rows.item(node_id, "c", position=3, updated_position=5, published=2)

    async def order(name: str) -> list[str]:
        return ids((await query.get_items(ACCOUNT, SERVICE, NODE, order_by=name)).items)

    assert await order("creation") == ["a", "b", "c"]
    assert await order("modification") == ["b", "c", "a"]
    assert await order("publication") == ["b", "c", "a"]
    newest = await query.get_items(ACCOUNT, SERVICE, NODE, max_items=1, order_by="publication")
    assert ids(newest.items) == ["a"]


async def test_items_listed_by_one_event_keep_the_order_they_were_listed_in(
    rows: ReadModelRows, query: Query
) -> None:
    node_id = rows.node()
    for item_id in ("z", "y", "x"):  # one sync page: one position for all
        rows.item(node_id, item_id, position=7, published=0)

    for order in ("creation", "modification", "publication"):
        page = await query.get_items(ACCOUNT, SERVICE, NODE, order_by=order)
        assert ids(page.items) == ["z", "y", "x"]
    last = await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, before=""))
    assert ids(last.items) == ["y", "x"]


async def test_a_notify_only_item_has_no_payload_and_parsed_json_is_decoded(
    rows: ReadModelRows, query: Query, engine: Engine
) -> None:
    node_id = rows.node()
    rows.item(node_id, "notify-only")
    rows.item(node_id, "parsed", parsed={"title": "Hi", "tags": ["a"]})
    with engine.begin() as connection:  # no payload, no content
        connection.execute(
            sa.text("UPDATE pubsub_item SET content_id = NULL WHERE item_id = 'notify-only'")
        )

    notify_only, item = (await query.get_items(ACCOUNT, SERVICE, NODE)).items

    assert (notify_only.payload, notify_only.parsed) == (None, None)
    assert item.parsed == {"title": "Hi", "tags": ["a"]}


# -- the SQL windows agree with the in-memory windows live answers use -------------------------

REQUESTS = st.builds(
    RsmRequest,
    max=st.none() | st.integers(0, 12),
    after=st.none(),
    before=st.none(),
    index=st.none(),
) | st.tuples(
    st.sampled_from(["after", "before", "index"]),
    st.none() | st.integers(0, 12),
    st.sampled_from([*numbered(14), ""]) | st.integers(0, 16),
).map(lambda spec: _request(*spec))


def _request(kind: str, size: int | None, where: str | int) -> RsmRequest:
    if kind == "index":
        return RsmRequest(max=size, index=where if isinstance(where, int) else 3)
    cursor = where if isinstance(where, str) else f"i{where:02}"
    if kind == "before":
        return RsmRequest(max=size, before=cursor)
    return RsmRequest(max=size, after=cursor or "i05")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request=st.none() | REQUESTS,
    order=st.sampled_from(["creation", "modification", "publication"]),
    item_ids=st.none() | st.lists(st.sampled_from(numbered(16)), max_size=8),
    max_items=st.none() | st.integers(0, 15),
)
def test_cached_windows_equal_the_in_memory_windows_of_the_whole_ordered_set(
    shaped_node: BlockingQuery,
    request: RsmRequest | None,
    order: str,
    item_ids: list[str] | None,
    max_items: int | None,
) -> None:
    everything = shaped_node.get_items(ACCOUNT, SERVICE, NODE, order_by=order).items
    result_set = [i for i in everything if item_ids is None or i.id in item_ids]
    if max_items is not None:
        result_set = result_set[-max_items:] if max_items else []
    try:
        expected = window(result_set, request, service=SERVICE, node=NODE)
    except RsmItemNotFound:
        with pytest.raises(RsmItemNotFound):
            shaped_node.get_items(
                ACCOUNT,
                SERVICE,
                NODE,
                rsm=request,
                order_by=order,
                item_ids=item_ids,
                max_items=max_items,
            )
        return

    page = shaped_node.get_items(
        ACCOUNT, SERVICE, NODE, rsm=request, order_by=order, item_ids=item_ids, max_items=max_items
    )

    assert (ids(page.items), page.rsm) == (ids(expected[0]), expected[1])


@pytest.fixture
def shaped_node(rows: ReadModelRows, blocking: BlockingQuery) -> BlockingQuery:
    """14 items with ties in every order, and publication times out of creation order."""
    node_id = rows.node()
    for n, item_id in enumerate(numbered(14)):
        rows.item(
            node_id,
            item_id,
            position=10 + n // 3,
            updated_position=40 - n // 2,
            published=(n * 7) % 5,
        )
    return blocking


# -- per-account views ---------------------------------------------------------------------


async def test_an_account_never_sees_items_cached_for_another(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node(), ["romeo-1", "romeo-2"])
    rows.items(rows.node(account=OTHER), ["mercutio-1"])

    mine = await query.get_items(ACCOUNT, SERVICE, NODE)
    theirs = await query.get_items(OTHER, SERVICE, NODE)

    assert ids(mine.items) == ["romeo-1", "romeo-2"]
    assert ids(theirs.items) == ["mercutio-1"]
    assert await query.get_item(ACCOUNT, SERVICE, NODE, "mercutio-1") is None
    assert [n.account for n in await query.nodes(OTHER)] == [OTHER]
    with pytest.raises(RsmItemNotFound):
        await query.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=1, after="mercutio-1"))


# -- one item, nodes, states ---------------------------------------------------------------


async def test_get_item_answers_from_a_completed_node_even_when_absent(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node(), ["a", "b"])

    found = await query.get_item(ACCOUNT, SERVICE, NODE, "b")

    assert found is not None
    assert found.id == "b"
    assert await query.get_item(ACCOUNT, SERVICE, NODE, "zzz") is None


async def test_nodes_and_node_state_describe_the_accounts_nodes(
    rows: ReadModelRows, query: Query
) -> None:
    rows.items(rows.node("blog", type="blog"), ["a"])
    rows.node("tune", type="tune", to_sync=False, sync_state="NONE")
    rows.node("gone", deleted=True)

    listed = await query.nodes(ACCOUNT)
    state = await query.node_state(ACCOUNT, SERVICE, "blog")

    assert [n.node for n in listed] == ["blog", "tune"]
    assert [n.node for n in await query.nodes(ACCOUNT, type="tune")] == ["tune"]
    assert [n.node for n in await query.nodes(ACCOUNT, include_deleted=True)] == [
        "blog",
        "gone",
        "tune",
    ]
    assert state is not None
    assert (state.sync_state, state.item_count, state.to_sync) == ("COMPLETED", 1, True)
    assert await query.node_state(ACCOUNT, SERVICE, "never") is None
    with pytest.raises(InvalidQuery, match="sync state"):
        await query.nodes(ACCOUNT, sync_state="DONE")


async def test_bad_requests_are_refused_with_a_clear_error(
    rows: ReadModelRows, query: Query
) -> None:
    rows.node()
    with pytest.raises(InvalidOrder, match="'newest'"):
        await query.get_items(ACCOUNT, SERVICE, NODE, order_by="newest")
    with pytest.raises(InvalidQuery, match="max_items"):
        await query.get_items(ACCOUNT, SERVICE, NODE, max_items=-1)
    with pytest.raises(InvalidQuery, match="list of item ids"):
        await query.get_items(ACCOUNT, SERVICE, NODE, item_ids="i01")
    with pytest.raises(InvalidRsm, match="after and before"):
        RsmRequest(max=1, after="a", before="b")
    with pytest.raises(InvalidRsm, match="max"):
        RsmRequest(max=-1)
    with pytest.raises(InvalidRsm, match="only before may be empty"):
        RsmRequest(after="")


# -- read-your-writes -----------------------------------------------------------------------


def checkpoint(engine: Engine, name: str, position: int) -> None:
    with engine.begin() as connection:
        connection.execute(projector_checkpoint.delete().where(projector_checkpoint.c.name == name))
        connection.execute(projector_checkpoint.insert().values(name=name, position=position))


async def test_wait_for_returns_once_the_live_projector_and_its_partitions_reached_a_position(
    engine: Engine, query: Query
) -> None:
    checkpoint(engine, "main/0-of-2", 12)
    checkpoint(engine, "main/1-of-2", 9)
    checkpoint(engine, "rebuild", 1)  # a rebuild's own checkpoint is no reader's concern

    assert await query.wait_for(9, timeout=1) == 9
    with pytest.raises(ProjectionTimeout, match=r"position 10 within 0.1 s \(it is at 9\)"):
        await query.wait_for(10, timeout=0.1)


async def test_wait_for_without_any_projector_times_out(query: Query) -> None:
    with pytest.raises(ProjectionTimeout, match="no projector checkpoint yet"):
        await query.wait_for(1, timeout=0.05)


def test_the_blocking_facade_answers_like_the_async_one(
    rows: ReadModelRows, blocking: BlockingQuery, engine: Engine
) -> None:
    rows.items(rows.node(), numbered(4))
    checkpoint(engine, "main", 4)

    page = blocking.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=2, before=""))

    assert ids(page.items) == ["i02", "i03"]
    assert page.rsm == RsmResult("i02", "i03", 2, 4)
    assert blocking.get_item(ACCOUNT, SERVICE, NODE, "i01") is not None
    assert [n.node for n in blocking.nodes(ACCOUNT)] == [NODE]
    assert blocking.wait_for(4, timeout=1) == 4


def test_a_read_survives_the_server_dropping_its_kept_connection(
    rows: ReadModelRows, blocking: BlockingQuery, engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: a server that drops connections")
    rows.items(rows.node(), numbered(3))
    assert ids(blocking.get_items(ACCOUNT, SERVICE, NODE, max_items=2).items) == ["i01", "i02"]
    kept = blocking._core.reader._connections._idle  # white box: the connection to kill
    pids = [connection.driver_connection.info.backend_pid for connection in kept]
    assert pids
    with engine.connect() as connection:
        for pid in pids:
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    page = blocking.get_items(ACCOUNT, SERVICE, NODE, max_items=2)

    assert ids(page.items) == ["i01", "i02"]


def test_disposing_of_the_engine_closes_the_connections_reads_kept(
    rows: ReadModelRows, database_url: str
) -> None:
    engine = create_engine(database_url)
    rows.items(rows.node(), numbered(2))
    query = BlockingQuery(engine)
    query.get_items(ACCOUNT, SERVICE, NODE, max_items=1)
    kept = list(query._core.reader._connections._idle)  # white box: what the hot path kept
    assert kept

    engine.dispose()

    assert all(connection.dbapi_connection is None for connection in kept)
    query.close()
