"""One node sync against Prosody, as the events it logs: complete, partial, failed, gone, and in
its place among notifications."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import (
    Event,
    NodeConfigured,
    NodeDeleted,
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncStarted,
)
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp import sync
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.sync import sync_node
from pubsub_cache.xmpp.translate import events_from_message
from pubsub_cache.xmpp.writer import EventWriter

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

PAYLOAD = "<p xmlns='urn:test'/>"


@pytest.fixture
async def writer(event_log: EventLog) -> AsyncIterator[EventWriter]:
    writer = EventWriter(event_log)
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        yield writer
        group.cancel_scope.cancel()


def logged(event_log: EventLog) -> list[Event]:
    return [record.event for record in event_log.read()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_whole_node_is_logged_as_a_complete_sync(
    prosody: LocalProsody,
    publisher: PubsubClient,
    reader: PubsubClient,
    writer: EventWriter,
    event_log: EventLog,
    node_name: str,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    for item in ("a", "b", "c"):
        await publisher.publish(service, node_name, item, PAYLOAD)

    result = await sync_node(reader, writer, service, node_name)
    await writer.flush()

    assert (result.state, result.item_count, result.reason) == ("COMPLETED", 3, None)
    started, subscribed, page, completed = logged(event_log)
    assert isinstance(started, SyncStarted)
    assert isinstance(subscribed, SubscriptionChanged)
    assert (subscribed.jid, subscribed.subscription, subscribed.source) == (
        reader.jid,
        "subscribed",
        "fetch",
    )
    assert isinstance(page, SyncPageFetched)
    assert [item.id for item in page.items] == ["a", "b", "c"]
    assert isinstance(completed, SyncCompleted)
    assert (completed.complete, completed.item_count) == (True, 3)
    assert {started.sync_id, page.sync_id, completed.sync_id} == {result.sync_id}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_reply_that_may_be_capped_is_logged_partial_with_the_reason(
    prosody: LocalProsody,
    publisher: PubsubClient,
    reader: PubsubClient,
    writer: EventWriter,
    event_log: EventLog,
    node_name: str,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    for item in ("a", "b"):
        await publisher.publish(service, node_name, item, PAYLOAD)

    result = await sync_node(reader, writer, service, node_name, page_size=2)
    await writer.flush()

    assert result.state == "PARTIAL"
    completed = logged(event_log)[-1]
    assert isinstance(completed, SyncCompleted)
    assert not completed.complete
    assert completed.reason == (
        "server does not page (no RSM); 2 items returned, as many as requested: "
        "may be capped by the request"
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_node_the_service_does_not_have_is_logged_failed_and_deleted(
    prosody: LocalProsody, reader: PubsubClient, writer: EventWriter, event_log: EventLog
) -> None:
    result = await sync_node(reader, writer, prosody.pubsub_service, "no-such-node")
    await writer.flush()

    assert (result.state, result.retry) == ("DELETED", False)
    _, failed, deleted = logged(event_log)
    assert isinstance(failed, SyncFailed)
    assert failed.condition == "item-not-found"
    assert "no-such-node" in failed.error
    assert isinstance(deleted, NodeDeleted)
    assert deleted.source == "fetch"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_pep_node_is_fetched_without_subscribing(
    reader: PubsubClient, writer: EventWriter, event_log: EventLog
) -> None:
    node = "urn:pubsub-cache:test:sync-pep"
    await reader.publish_pep(node, "current", PAYLOAD)

    result = await sync_node(reader, writer, reader.jid, node)
    await writer.flush()

    assert result.state == "COMPLETED"
    events = logged(event_log)
    assert [type(e).__name__ for e in events] == [
        "SyncStarted",
        "NodeConfigured",  # its own PEP node: the account may read the configuration
        "SyncPageFetched",
        "SyncCompleted",
    ]
    configured = events[1]
    assert isinstance(configured, NodeConfigured)
    assert configured.form is not None
    assert configured.form["pubsub#max_items"] == ["1"]  # Prosody's PEP default


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_page_keeps_its_place_before_a_notification_processed_right_after_its_reply(
    reader: PubsubClient,
    writer: EventWriter,
    event_log: EventLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # slixmpp runs the handlers of stanzas that arrived together one after the other, before
    # the coroutine awaiting a reply resumes. Here a retraction is handed to the notification
    # path right after the items reply: in the log it must still come after the page.
    # (A PEP node: no subscribe request, the only reply is the page's.)
    node = "urn:pubsub-cache:test:sync-order"
    await reader.publish_pep(node, "x", PAYLOAD)
    retraction = ET.fromstring(
        f"<message xmlns='jabber:client' from='{reader.jid}' to='{reader.jid}'>"
        "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
        f"<items node='{node}'><retract id='x'/></items></event></message>"
    )

    def notify(_: object) -> None:
        now = datetime.now(UTC)
        writer.submit(events_from_message(retraction, account=reader.jid, observed_at=now))

    register = reader.xmpp.register_handler

    def register_then_follow(handler: Any, *args: Any, **kwargs: Any) -> None:
        register(handler, *args, **kwargs)
        if handler.name.startswith("IqCallback_"):  # a request's reply handler: follow it
            iq_id = handler.name.removeprefix("IqCallback_")
            register(Callback("retract after reply", MatcherId(iq_id), notify, once=True))

    async def no_configuration(*_: object) -> None:
        return None  # one request only: the page's (its reply is the one followed)

    monkeypatch.setattr(sync, "_owner_configuration", no_configuration)
    monkeypatch.setattr(reader.xmpp, "register_handler", register_then_follow)
    result = await sync_node(reader, writer, reader.jid, node)
    monkeypatch.undo()
    await writer.flush()

    assert result.state == "COMPLETED"
    assert [type(e).__name__ for e in logged(event_log)] == [
        "SyncStarted",
        "SyncPageFetched",
        "ItemsRetracted",
        "SyncCompleted",
    ]
