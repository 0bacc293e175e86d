"""From the event log through the projector to the query library, on both databases."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, atom
from pubsub_cache.events import (
    AnyEvent,
    CachePurged,
    Item,
    ItemsPublished,
    SyncCompleted,
    SyncPageFetched,
    SyncStarted,
)
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.query import Filter, NotCached, Query, RsmRequest, RsmResult

pytestmark = pytest.mark.anyio

BLOG = "urn:xmpp:microblog:0"


def entry(n: int) -> Item:
    return Item(
        id=f"post-{n}",
        publisher=SERVICE,
        payload=atom(f"Post {n} about pubsub", published=f"2026-01-{n + 1:02}T00:00:00Z"),
    )


def synced(count: int) -> list[AnyEvent]:
    """A complete sync of the blog node: its items in one page, oldest first (as Prosody)."""
    return [
        SyncStarted(account=ACCOUNT, service=SERVICE, node=BLOG, observed_at=at(0), sync_id="s"),
        SyncPageFetched(
            account=ACCOUNT,
            service=SERVICE,
            node=BLOG,
            observed_at=at(1),
            sync_id="s",
            items=[entry(n) for n in range(count)],
        ),
        SyncCompleted(
            account=ACCOUNT,
            service=SERVICE,
            node=BLOG,
            observed_at=at(2),
            sync_id="s",
            complete=True,
            item_count=count,
        ),
    ]


@pytest.fixture
def project(engine: Engine) -> Callable[[], int]:
    """Apply what the log holds, as the daemon would (one projector, so one lease holder)."""
    return Projector(engine, registry=default_registry()).catch_up


async def test_a_synced_node_is_read_from_the_projected_read_model(
    engine: Engine, event_log: EventLog, project: Callable[[], int]
) -> None:
    event_log.append(synced(5))
    (position,) = event_log.append(
        [
            ItemsPublished(
                account=ACCOUNT, service=SERVICE, node=BLOG, observed_at=at(3), items=[entry(5)]
            )
        ]
    )
    project()

    async with Query.open(engine, event_log=event_log) as query:
        assert await query.wait_for(position, timeout=1) == position
        page = await query.get_items(ACCOUNT, SERVICE, BLOG, rsm=RsmRequest(max=3, before=""))
        first = await query.get_items(ACCOUNT, SERVICE, BLOG, rsm=RsmRequest(max=2))
        found = await query.search(ACCOUNT, filters=[Filter("title", "like", "Post 4%")])
        words = await query.search(ACCOUNT, text="post pubsub", order_by="creation")
        state = await query.node_state(ACCOUNT, SERVICE, BLOG)

    assert [item.id for item in page.items] == ["post-3", "post-4", "post-5"]
    assert page.rsm == RsmResult("post-3", "post-5", 3, 6)
    assert (page.from_cache, page.complete) == (True, True)
    assert page.items[-1].parsed["title"] == "Post 5 about pubsub"
    assert page.items[-1].published is not None
    assert page.items[-1].published.isoformat() == "2026-01-06T00:00:00+00:00"
    assert [item.id for item in first.items] == ["post-0", "post-1"]
    assert [hit.item.id for hit in found.hits] == ["post-4"]
    assert words.total == 6
    assert state is not None
    assert (state.sync_state, state.item_count, state.type) == ("COMPLETED", 6, "blog")


async def test_a_read_asks_for_a_sync_which_the_projector_records_on_the_node(
    engine: Engine, event_log: EventLog, project: Callable[[], int]
) -> None:
    event_log.append(
        [
            ItemsPublished(
                account=ACCOUNT, service=SERVICE, node=BLOG, observed_at=at(0), items=[entry(1)]
            )
        ]
    )
    project()

    async with Query.open(engine, event_log=event_log) as query:
        with pytest.raises(NotCached, match="a sync was requested"):
            await query.get_items(ACCOUNT, SERVICE, BLOG)
        project()
        state = await query.node_state(ACCOUNT, SERVICE, BLOG)

    assert state is not None
    assert (state.to_sync, state.sync_state, state.sync_requested) == (True, "NONE", True)


async def test_a_purge_command_empties_what_the_query_library_sees(
    engine: Engine, event_log: EventLog, project: Callable[[], int]
) -> None:
    event_log.append(synced(3))
    project()
    (position,) = event_log.append(
        [CachePurged(account=ACCOUNT, observed_at=at(10), service=SERVICE, node=BLOG)]
    )
    project()

    async with Query.open(engine, event_log=event_log) as query:
        await query.wait_for(position, timeout=1)
        state = await query.node_state(ACCOUNT, SERVICE, BLOG)
        hits = await query.search(ACCOUNT, text="pubsub")

    assert state is not None
    assert (state.item_count, state.sync_state) == (0, "NONE")
    assert hits.total == 0
