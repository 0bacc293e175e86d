"""No poison events (issue 10, point 4): a value over the event limits from the server is refused
at the edge, counted, and the node goes on; by hand-built stanzas, then through the real Prosody."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.codec import decode, encode
from pubsub_cache.events.limits import MAX_TEXT
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import (
    ItemsPublished,
    ItemsRetracted,
    NodeEvent,
    NodePurged,
    NotificationRejected,
    SyncCompleted,
)
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.schema import pubsub_counter
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.errors import XmppProtocolError
from pubsub_cache.xmpp.stanzas import reply_items
from pubsub_cache.xmpp.translate import events_from_message
from xmpp_fixtures import NewAccount, cached_items, cached_node, eventually, running_daemon

ACCOUNT = "reader@localhost"
SERVICE = "pubsub.localhost"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EVENT = "http://jabber.org/protocol/pubsub#event"
PUBSUB = "http://jabber.org/protocol/pubsub"
TOO_LONG = "x" * (MAX_TEXT + 1)  # 3072 characters


def rejected_count(engine: Engine, account: str) -> int:
    query = sa.select(pubsub_counter.c.value).where(
        pubsub_counter.c.account == account, pubsub_counter.c.name == "rejected"
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def translate(body: str, *, sender: str = SERVICE) -> list[NodeEvent]:
    xml = (
        f"<message xmlns='jabber:client' to='{ACCOUNT}/r' from='{sender}'>"
        f"<event xmlns='{EVENT}'>{body}</event></message>"
    )
    events = events_from_message(ET.fromstring(xml), account=ACCOUNT, observed_at=NOW)
    for event in events:  # every event is one the log can decode
        assert decode(encode(event)) == event
    return events


def kinds(events: list[NodeEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_an_oversized_item_id_is_rejected_in_place_and_the_rest_kept() -> None:
    events = translate(
        f"<items node='blog'><item id='a'/><item id='{TOO_LONG}'/><item id='b'/></items>"
        "<purge node='blog'/>"
    )

    assert kinds(events) == [
        "ItemsPublished",
        "NotificationRejected",
        "ItemsPublished",
        "NodePurged",
    ]
    rejected = events[1]
    assert isinstance(rejected, NotificationRejected)
    assert (rejected.service, rejected.node) == (SERVICE, "blog")
    assert "3072 characters" in rejected.reason
    assert isinstance(events[3], NodePurged)


def test_an_oversized_retract_id_is_rejected_and_the_other_retracts_kept() -> None:
    events = translate(f"<items node='blog'><retract id='a'/><retract id='{TOO_LONG}'/></items>")

    assert kinds(events) == ["ItemsRetracted", "NotificationRejected"]
    assert isinstance(events[0], ItemsRetracted)
    assert events[0].item_ids == ["a"]


def test_an_oversized_node_name_is_rejected_under_its_first_characters() -> None:
    events = translate(f"<purge node='{TOO_LONG}'/><purge node='blog'/>")

    assert kinds(events) == ["NotificationRejected", "NodePurged"]
    assert len(events[0].node) == MAX_TEXT
    assert events[0].node.startswith("xxx")


def test_an_oversized_subscription_jid_is_rejected() -> None:
    events = translate(f"<subscription node='blog' jid='{TOO_LONG}' subscription='subscribed'/>")

    assert kinds(events) == ["NotificationRejected"]
    assert "jid must be" in events[0].reason  # type: ignore[attr-defined]


def test_an_oversized_sender_is_rejected_under_its_first_characters() -> None:
    events = translate("<purge node='blog'/>", sender=f"{TOO_LONG}.example")

    assert kinds(events) == ["NotificationRejected"]
    assert len(events[0].service) == MAX_TEXT


def test_a_reply_page_leaves_an_oversized_item_out_and_says_why() -> None:
    reply = ET.fromstring(
        f"<iq xmlns='jabber:client' type='result'><pubsub xmlns='{PUBSUB}'><items node='blog'>"
        f"<item id='a'/><item id='{TOO_LONG}'/><item id='b'/></items></pubsub></iq>"
    )
    refused: list[str] = []

    items = reply_items(reply, "get items", SERVICE, "blog", refused=refused)

    assert [item.id for item in items] == ["a", "b"]
    [reason] = refused
    assert "3072 characters" in reason
    with pytest.raises(XmppProtocolError, match="3072 characters"):
        reply_items(reply, "get item", SERVICE, "blog")  # asked for one: no way to go on


@pytest.mark.anyio
@pytest.mark.xmpp
async def test_a_3072_character_item_id_from_prosody_is_rejected_counted_and_the_node_goes_on(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "before", "<p xmlns='urn:test'>1</p>")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")
        await daemon.wait_idle()
        await eventually(
            lambda: set(cached_items(engine, cache.jid, service, node_name)) == {"before"}
        )

        await publisher.publish(service, node_name, TOO_LONG, "<p xmlns='urn:test'>2</p>")
        await publisher.publish(service, node_name, "after", "<p xmlns='urn:test'>3</p>")

        def cached() -> set[str]:
            return set(cached_items(engine, cache.jid, service, node_name))

        await eventually(lambda: cached() == {"before", "after"})
        await eventually(lambda: rejected_count(engine, cache.jid) == 1)

        # A sync reads the oversized item back: it is left out, the node is PARTIAL with the
        # reason, and nothing fails.
        daemon.request_sync(service, node_name, "again")
        await daemon.wait_idle()
        await eventually(
            lambda: (
                (cached_node(engine, cache.jid, service, node_name) or {}).get("sync_state")
                == "PARTIAL"
            )
        )
        node = cached_node(engine, cache.jid, service, node_name)
        assert node is not None
        assert "items left out" in node["sync_reason"]
        assert cached() == {"before", "after"}

    records = EventLog(engine).read(after=0)  # every row decodes (read would raise otherwise)
    published = [
        item.id
        for r in records
        if isinstance(r.event, ItemsPublished) and r.event.node == node_name
        for item in r.event.items
    ]
    assert TOO_LONG not in published
    [completed, *_] = [
        r.event
        for r in reversed(records)
        if isinstance(r.event, SyncCompleted) and r.event.node == node_name
    ]
    assert not completed.complete
