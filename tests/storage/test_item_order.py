"""The cache lists items where the service does, and drops what the service dropped (issue 9).

Histories as the ingest logs them, projected on both databases, read through the query library:
items pushed or published around a sync take the places the sync's listing gives them; the
service's own order (creation on ejabberd, modification on Prosody) is the default; a known
``max_items`` evicts on publication; a listing (reconciliation) removes what the service no
longer lists and asks for a sync when it lists what the cache lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published, retracted
from pubsub_cache.events import (
    Event,
    Item,
    ItemsListed,
    NodeConfigured,
    ServiceOrder,
    SyncCompleted,
    SyncPageFetched,
    SyncStarted,
)
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_node
from pubsub_cache.query import BlockingQuery, RsmRequest

Project = Callable[[Sequence[Event]], None]
COMMON: dict[str, Any] = {"account": ACCOUNT, "service": SERVICE, "node": NODE}


@pytest.fixture
def project(engine: Engine, event_log: EventLog) -> Project:
    projector = Projector(engine, registry=default_registry(), batch_size=5)

    def run(events: Sequence[Event]) -> None:
        event_log.append(events)
        projector.catch_up()

    return run


@pytest.fixture
def cache(engine: Engine) -> Iterator[BlockingQuery]:
    with BlockingQuery.open(engine) as query:
        yield query


def sync(
    *pages: Sequence[str],
    sync_id: str = "s1",
    order: ServiceOrder | None = "creation",
    interleaved: dict[int, Sequence[Event]] | None = None,
) -> list[Event]:
    """A complete sync listing ``pages``; ``interleaved[k]`` are logged just before page k."""
    events: list[Event] = [SyncStarted(**COMMON, observed_at=at(10), sync_id=sync_id, order=order)]
    offset = 0
    for index, page in enumerate(pages):
        events.extend((interleaved or {}).get(index, ()))
        items = [Item(id=item_id, payload=f"<p xmlns='urn:t'>{item_id}</p>") for item_id in page]
        events.append(
            SyncPageFetched(
                **COMMON,
                observed_at=at(11),
                sync_id=sync_id,
                items=items,
                page=index,
                offset=offset,
            )
        )
        offset += len(page)
    events.extend((interleaved or {}).get(len(pages), ()))
    count = sum(len(page) for page in pages)
    events.append(
        SyncCompleted(
            **COMMON, observed_at=at(12), sync_id=sync_id, complete=True, item_count=count
        )
    )
    return events


def ids(cache: BlockingQuery, **request: Any) -> list[str]:
    return [item.id for item in cache.get_items(ACCOUNT, SERVICE, NODE, **request).items]


def test_an_item_pushed_before_the_sync_page_takes_its_place_from_the_page(
    project: Project, cache: BlockingQuery
) -> None:
    # ejabberd pushes the last item on subscription, before the page the client asked for.
    project([published("it3", when=1), *sync(["it1", "it2", "it3"])])

    assert ids(cache) == ["it1", "it2", "it3"]
    assert ids(cache, max_items=1) == ["it3"]
    assert ids(cache, order_by="creation") == ["it1", "it2", "it3"]
    assert ids(cache, rsm=RsmRequest(max=2, before="")) == ["it2", "it3"]


def test_items_published_during_a_catch_up_follow_the_items_the_sync_lists(
    project: Project, cache: BlockingQuery
) -> None:
    project(sync(["it1"]))
    # Down: it2 and it3 published. Back: it4 is notified while the catch-up sync runs, before
    # the page that lists it1..it3 arrives.
    project(sync(["it1", "it2", "it3"], sync_id="s2", interleaved={0: [published("it4")]}))

    assert ids(cache) == ["it1", "it2", "it3", "it4"]
    assert ids(cache, max_items=2) == ["it3", "it4"]


def test_pages_of_one_sync_keep_the_order_of_the_whole_listing(
    project: Project, cache: BlockingQuery
) -> None:
    pages = [[f"it{n:02}" for n in range(start, start + 3)] for start in (0, 3, 6)]
    project([published("it07", "it08"), *sync(*pages, interleaved={1: [published("new")]})])

    assert ids(cache) == [f"it{n:02}" for n in range(9)] + ["new"]


def test_a_republished_id_moves_to_the_end_only_where_the_service_orders_by_modification(
    project: Project, cache: BlockingQuery, event_log: EventLog
) -> None:
    project([*sync(["a", "b", "c"], order="modification"), published("a")])
    assert ids(cache) == ["b", "c", "a"]
    assert ids(cache, order_by="creation") == ["a", "b", "c"]
    assert ids(cache, order_by="modification") == ["b", "c", "a"]
    assert cache.get_items(ACCOUNT, SERVICE, NODE).order == "modification"

    # The same node served by a service that orders by creation: its next sync says so.
    project(sync(["a", "b", "c"], sync_id="s2", order="creation"))
    assert ids(cache) == ["a", "b", "c"]
    project([published("b")])
    assert ids(cache) == ["a", "b", "c"]
    # The creation listing said nothing of last publications: a's stays where it was.
    assert ids(cache, order_by="modification") == ["c", "a", "b"]
    assert cache.get_items(ACCOUNT, SERVICE, NODE).order == "creation"


def test_a_listing_by_modification_places_new_items_in_both_orders(
    project: Project, cache: BlockingQuery
) -> None:
    project([published("c", when=1), *sync(["b", "a", "d", "c"], order="modification")])
    assert ids(cache) == ["b", "a", "d", "c"]
    # A listing by last publication tells nothing of c's first: it keeps what was seen of it.
    assert ids(cache, order_by="creation") == ["c", "b", "a", "d"]


def test_a_known_max_items_evicts_the_oldest_on_publication(
    project: Project, cache: BlockingQuery, engine: Engine
) -> None:
    configured = NodeConfigured(
        **COMMON, observed_at=at(0), source="fetch", form={"pubsub#max_items": ["3"]}
    )
    project([configured, *sync(["it1", "it2"], order="modification")])
    project([published("it3"), published("it4"), published("it5")])
    assert ids(cache) == ["it3", "it4", "it5"]
    page = cache.get_items(ACCOUNT, SERVICE, NODE, rsm=RsmRequest(max=0))
    assert page.rsm.count == 3

    # Re-publishing the oldest makes it the newest (by modification): the next one goes.
    project([published("it3"), published("it6")])
    assert ids(cache) == ["it5", "it3", "it6"]

    # Lowered: nothing goes until the next publication (ejabberd; Prosody's immediate eviction
    # is learned by reconciliation), which keeps the newest 1.
    lowered = NodeConfigured(**COMMON, observed_at=at(0), form={"pubsub#max_items": ["1"]})
    project([lowered])
    assert ids(cache) == ["it5", "it3", "it6"]
    project([published("it7")])
    assert ids(cache) == ["it7"]
    with engine.connect() as connection:
        row = connection.execute(sa.select(pubsub_node.c.max_items, pubsub_node.c.item_count)).one()
    assert tuple(row) == (1, 1)


def test_max_items_unknown_or_max_evicts_nothing(project: Project, cache: BlockingQuery) -> None:
    configured = NodeConfigured(**COMMON, observed_at=at(0), form={"pubsub#max_items": ["max"]})
    project([configured, *sync(["a"]), published("b", "c")])
    assert ids(cache) == ["a", "b", "c"]


def test_a_listing_removes_what_the_service_no_longer_lists(
    project: Project, cache: BlockingQuery, engine: Engine
) -> None:
    project([*sync(["it1", "it2", "it3"]), published("it4")])
    # Prosody evicted it1 and it2 silently (max_items=2): the reconciliation's listing shows it.
    project([ItemsListed(**COMMON, observed_at=at(20), item_ids=["it4", "it3"])])
    assert ids(cache) == ["it3", "it4"]
    with engine.connect() as connection:
        requested = connection.execute(sa.select(pubsub_node.c.sync_requested_position)).scalar()
    assert requested is None  # nothing missing: no sync needed


def test_a_listing_naming_unknown_items_requests_a_sync_and_an_incomplete_one_removes_nothing(
    project: Project, cache: BlockingQuery, engine: Engine, event_log: EventLog
) -> None:
    project(sync(["it1", "it2"]))
    project([ItemsListed(**COMMON, observed_at=at(20), item_ids=["it2"], complete=False)])
    assert ids(cache) == ["it1", "it2"]
    project([ItemsListed(**COMMON, observed_at=at(21), item_ids=["it1", "it2", "lost"])])
    assert ids(cache) == ["it1", "it2"]
    with engine.connect() as connection:
        requested = connection.execute(sa.select(pubsub_node.c.sync_requested_position)).scalar()
    assert requested == event_log.head()


def test_a_listed_id_twice_takes_its_last_place(project: Project, cache: BlockingQuery) -> None:
    # Prosody's memory store lists a re-published id where it was and again at the end.
    project(sync(["a", "b", "a", "c", "b"], order="modification"))
    assert ids(cache) == ["a", "c", "b"]


def test_replay_in_any_batch_size_evicts_and_places_the_same_items(
    engine: Engine, event_log: EventLog
) -> None:
    configured = NodeConfigured(**COMMON, observed_at=at(0), form={"pubsub#max_items": ["2"]})
    history: list[Event] = [
        published("x"),
        configured,
        *sync(["a", "b"], order="modification", interleaved={1: [published("c")]}),
        published("d"),
        retracted("d"),
        published("a"),
        ItemsListed(**COMMON, observed_at=at(30), item_ids=["a"]),
        published("e", "f"),
    ]
    event_log.append(history)
    digests = []
    for batch_size in (1, 3, 1000):
        with engine.begin() as connection:
            for table in ("pubsub_item", "pubsub_node", "projector_checkpoint"):
                connection.execute(sa.text(f"DELETE FROM {table}"))
        Projector(engine, registry=default_registry(), batch_size=batch_size).catch_up()
        with engine.connect() as connection:
            digests.append(read_model_digest(connection))
    assert len(set(digests)) == 1
    with BlockingQuery.open(engine) as cache:
        assert ids(cache) == ["e", "f"]
