"""The apply rules, event by event, on both databases (DESIGN: read model, invariants 4, 6, 8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, atom, published, purged, retracted
from pubsub_cache.events import (
    CachePurged,
    CacheReset,
    Event,
    Item,
    ItemsPublished,
    NodeConfigured,
    NodeDeleted,
    NotificationRejected,
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncRequested,
    SyncStarted,
)
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_counter, pubsub_node

MICROBLOG = "urn:xmpp:microblog:0"
Project = Callable[[Sequence[Event]], None]


@pytest.fixture
def project(engine: Engine, event_log: EventLog) -> Project:
    """Append events and let the projector apply everything."""
    projector = Projector(engine, registry=default_registry(), batch_size=7)

    def run(events: Sequence[Event]) -> None:
        event_log.append(events)
        projector.catch_up()

    return run


def items(engine: Engine, node: str = NODE) -> dict[str, dict[str, Any]]:
    """The items of ``node`` by item id."""
    query = (
        sa.select(ITEM_ROWS)
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(pubsub_node.c.node == node)
    )
    with engine.connect() as connection:
        return {row.item_id: dict(row._mapping) for row in connection.execute(query)}


def node_row(engine: Engine, node: str = NODE) -> dict[str, Any]:
    """The pubsub_node row of ``node``."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(pubsub_node).where(pubsub_node.c.node == node)).one()
    return dict(row._mapping)


def sync(kind: type[Any], sync_id: str = "s1", **fields: Any) -> Any:
    """A sync event of ``kind`` for NODE."""
    return kind(
        account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(5), sync_id=sync_id, **fields
    )


def test_publish_creates_node_and_items_with_parsed_json(project: Project, engine: Engine) -> None:
    project(
        [published("1", node=MICROBLOG, payload=atom("Hello", published="2026-01-02T03:04:05Z"))]
    )
    stored = items(engine, MICROBLOG)["1"]
    assert stored["parsed"] is not None
    assert stored["parsed"]["title"] == "Hello"
    assert stored["published_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert "Hello body" in stored["text"]
    node = node_row(engine, MICROBLOG)
    assert (node["analyser"], node["type"], node["to_sync"], node["item_count"]) == (
        "xep-0277",
        "blog",
        True,
        1,
    )


def test_comment_nodes_get_the_comment_subtype(project: Project, engine: Engine) -> None:
    node = "urn:xmpp:microblog:0:comments/post-1"
    project([published("c1", node=node, payload=atom("Nice"))])
    assert (node_row(engine, node)["type"], node_row(engine, node)["subtype"]) == (
        "blog",
        "comment",
    )


def test_publication_time_falls_back_to_delay_then_observation(
    project: Project, engine: Engine
) -> None:
    delayed = ItemsPublished(
        account=ACCOUNT,
        service=SERVICE,
        node=NODE,
        observed_at=at(100),
        items=[Item(id="d", payload="<x xmlns='urn:other'/>", delay=at(-50))],
    )
    project([delayed, published("o", payload="<x xmlns='urn:other'/>", when=7)])
    stored = items(engine)
    assert stored["d"]["published_at"] == at(-50).timestamp()
    assert stored["o"]["published_at"] == at(7).timestamp()


def test_republishing_the_same_payload_changes_only_bookkeeping(
    project: Project, engine: Engine
) -> None:
    project([published("1", when=1)])
    before = items(engine)["1"]
    project([published("1", when=2)])
    after = items(engine)["1"]
    # A re-publication is one all the same: in the order of last publication (Prosody's) the
    # item moves to the end. Nothing else changes (invariant 4).
    moved = {"modification_rank", "service_rank"}
    assert after["modification_rank"] > before["modification_rank"]
    assert after["creation_rank"] == before["creation_rank"]
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved
    }


def test_republishing_a_changed_payload_updates_the_item(project: Project, engine: Engine) -> None:
    project([published("1", node=MICROBLOG, payload=atom("v1"), when=1)])
    project([published("1", node=MICROBLOG, payload=atom("v2"), when=2)])
    stored = items(engine, MICROBLOG)["1"]
    assert "v2" in stored["payload"]
    assert stored["created_position"] == 1
    assert stored["updated_position"] == 2
    assert stored["created_at"] == at(1).timestamp()
    assert stored["updated_at"] == at(2).timestamp()


def test_notify_only_creates_a_pending_item_filled_later(project: Project, engine: Engine) -> None:
    project([published("1", payload=None)])
    assert items(engine)["1"]["payload"] is None
    project([published("1", payload="<x xmlns='urn:x'>full</x>")])
    assert items(engine)["1"]["payload"] == "<x xmlns='urn:x'>full</x>"


def test_retract_removes_item_from_cache(project: Project, engine: Engine) -> None:
    project([published("1", "2"), retracted("1")])
    assert set(items(engine)) == {"2"}
    assert node_row(engine)["item_count"] == 1


def test_the_item_count_follows_publications_across_batches(
    project: Project, engine: Engine
) -> None:
    # Nodes that only gained items are not counted again (their count moves by what they
    # gained): new ids, the same ids again, a notify-only repeat, in batches of 7.
    project([published(f"i{n}", when=n) for n in range(10)])
    assert node_row(engine)["item_count"] == 10
    project([published("i3", when=20), published("i11", "i12", when=21), published("i4")])
    project([published("i12", payload=None), published("i13", "i3")])
    assert node_row(engine)["item_count"] == 13
    project([retracted("i0", "i1", "nope"), published("i14")])
    assert node_row(engine)["item_count"] == 12 == len(items(engine))


def test_retract_then_republish_in_one_batch_starts_a_new_item(
    project: Project, engine: Engine
) -> None:
    project([published("1", when=1), retracted("1", when=2), published("1", when=3)])
    stored = items(engine)["1"]
    assert stored["created_position"] == 3
    assert stored["created_at"] == at(3).timestamp()


def test_purge_removes_every_item_of_the_node(project: Project, engine: Engine) -> None:
    project([published("1", "2"), published("x", node="other"), purged()])
    assert items(engine) == {}
    assert set(items(engine, "other")) == {"x"}


def test_delete_leaves_a_tombstone_with_redirect(project: Project, engine: Engine) -> None:
    deleted = NodeDeleted(
        account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(1), redirect="xmpp:s?;node=n2"
    )
    project([published("1"), deleted])
    node = node_row(engine)
    assert (node["deleted"], node["redirect"], node["item_count"]) == (True, "xmpp:s?;node=n2", 0)


def test_configuration_and_subscription_are_stored(project: Project, engine: Engine) -> None:
    form = {"pubsub#max_items": ["10"]}
    project(
        [
            NodeConfigured(
                account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0), form=form
            ),
            SubscriptionChanged(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                jid=ACCOUNT,
                subscription="subscribed",
            ),
        ]
    )
    node = node_row(engine)
    assert node["configuration"] == form
    assert (node["subscribed"], node["subscription"]) == (True, "subscribed")


def test_a_complete_sync_removes_items_gone_from_the_server(
    project: Project, engine: Engine
) -> None:
    project([published("old", "kept")])
    project(
        [
            sync(SyncStarted),
            sync(SyncPageFetched, items=[Item(id="kept", payload=published("k").items[0].payload)]),
            published("new-during-sync"),
            sync(SyncCompleted, complete=True, item_count=1),
        ]
    )
    assert set(items(engine)) == {"kept", "new-during-sync"}
    node = node_row(engine)
    assert (node["sync_state"], node["sync_reason"]) == ("COMPLETED", None)


def test_a_partial_sync_is_never_completed_and_removes_nothing(
    project: Project, engine: Engine
) -> None:
    project([published("old")])
    project(
        [
            sync(SyncStarted),
            sync(SyncPageFetched, items=[Item(id="a", payload="<x xmlns='urn:x'/>")]),
            sync(SyncCompleted, complete=False, item_count=1, reason="no RSM, capped"),
        ]
    )
    assert set(items(engine)) == {"old", "a"}
    node = node_row(engine)
    assert (node["sync_state"], node["sync_reason"]) == ("PARTIAL", "no RSM, capped")


def test_sync_states_follow_the_sync_events(project: Project, engine: Engine) -> None:
    requested = SyncRequested(account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0))
    project([requested])
    assert node_row(engine)["sync_requested_position"] == 1
    project([sync(SyncStarted)])
    node = node_row(engine)
    assert (node["sync_state"], node["sync_requested_position"]) == ("IN_PROGRESS", None)
    project([sync(SyncFailed, error="gone", condition="item-not-found")])
    assert node_row(engine)["sync_state"] == "ERROR"
    assert node_row(engine)["sync_reason"] == "item-not-found: gone"


def test_a_stale_sync_does_not_change_the_state(project: Project, engine: Engine) -> None:
    project([sync(SyncStarted, sync_id="old"), sync(SyncStarted, sync_id="new")])
    project([sync(SyncCompleted, sync_id="old", complete=True, item_count=0)])
    assert node_row(engine)["sync_state"] == "IN_PROGRESS"


def test_unparseable_payload_is_kept_raw_with_the_error(project: Project, engine: Engine) -> None:
    bad = "<entry xmlns='http://www.w3.org/2005/Atom'><title>unclosed</entry>"
    project([published("1", node=MICROBLOG, payload=bad)])
    stored = items(engine, MICROBLOG)["1"]
    assert stored["payload"] == bad
    assert stored["parsed"] is None
    assert "malformed" in stored["parse_error"]


def test_rejected_notifications_are_counted_per_account(project: Project, engine: Engine) -> None:
    rejected = NotificationRejected(
        account=ACCOUNT, service="mallory@x/res", node=NODE, observed_at=at(0), reason="resource"
    )
    project([rejected, rejected])
    with engine.connect() as connection:
        rows = connection.execute(sa.select(pubsub_counter)).all()
    assert [(r.account, r.name, r.value) for r in rows] == [(ACCOUNT, "rejected", 2)]


def test_operator_purge_by_age_marks_synced_nodes_partial(project: Project, engine: Engine) -> None:
    project(
        [
            sync(SyncStarted),
            sync(SyncPageFetched, items=[Item(id="a", payload="<x xmlns='urn:x'/>")]),
            sync(SyncCompleted, complete=True, item_count=1),
            published("b", when=100),
        ]
    )
    project([CachePurged(account=ACCOUNT, observed_at=at(200), older_than=at(50))])
    assert set(items(engine)) == {"b"}
    assert node_row(engine)["sync_state"] == "PARTIAL"
    assert node_row(engine)["item_count"] == 1


def test_operator_reset_forgets_nodes_of_one_account_only(project: Project, engine: Engine) -> None:
    project([published("1"), published("2", account="other@example.org")])
    project([CacheReset(account=ACCOUNT, observed_at=at(1))])
    with engine.connect() as connection:
        accounts = connection.execute(sa.select(pubsub_node.c.account)).scalars().all()
    assert accounts == ["other@example.org"]


def test_publishing_to_a_deleted_node_brings_it_back(project: Project, engine: Engine) -> None:
    deleted = NodeDeleted(
        account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(1), redirect="xmpp:x"
    )
    project([published("1"), deleted, published("2", when=2)])
    node = node_row(engine)
    assert (node["deleted"], node["redirect"], node["item_count"]) == (False, None, 1)
