"""The ingest's recovery paths against the real Prosody (issue 10, point 8): a cancelled sync, a
failed connect, a failed keepalive, an exception in the notification handler."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sqlalchemy.engine import Engine

from pg_proxy import PgProxy
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import Event, ItemsPublished, SyncFailed, SyncStarted
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.xmpp import ingest as ingest_module
from pubsub_cache.xmpp import sync
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.directory import ReadModelDirectory
from pubsub_cache.xmpp.errors import XmppTimeout
from pubsub_cache.xmpp.ingest import Ingest
from pubsub_cache.xmpp.sync import sync_node
from pubsub_cache.xmpp.translate import events_from_message
from pubsub_cache.xmpp.writer import EventWriter
from xmpp_fixtures import FAST, NewAccount, cached_items, cached_node, eventually, running_daemon

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
    return [record.event for record in event_log.read(after=0, limit=100_000)]


def synced(engine: Engine, account: str, service: str, node: str) -> bool:
    return (cached_node(engine, account, service, node) or {}).get("sync_state") == "COMPLETED"


async def test_a_cancelled_sync_logs_a_failure_so_its_node_is_not_left_in_progress(
    prosody: LocalProsody,
    publisher: PubsubClient,
    reader: PubsubClient,
    writer: EventWriter,
    event_log: EventLog,
    engine: Engine,
    node_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "one", PAYLOAD)
    asked = anyio.Event()
    real = sync._owner_configuration

    async def hanging(*args: Any) -> Any:
        asked.set()  # the sync is under way: its SyncStarted is submitted
        await anyio.sleep_forever()
        return await real(*args)

    monkeypatch.setattr(sync, "_owner_configuration", hanging)
    async with anyio.create_task_group() as group:
        group.start_soon(sync_node, reader, writer, service, node_name)
        with anyio.fail_after(5):
            await asked.wait()
        group.cancel_scope.cancel()  # the session ends, or the ingest stops
    with anyio.fail_after(5):
        await writer.flush()

    events = [e for e in logged(event_log) if getattr(e, "node", None) == node_name]
    assert [type(e) for e in events] == [SyncStarted, SyncFailed]
    started, failed = events
    assert isinstance(started, SyncStarted)
    assert isinstance(failed, SyncFailed)
    assert failed.sync_id == started.sync_id
    assert "interrupted" in failed.error
    Projector(engine, registry=default_registry()).catch_up()
    node = cached_node(engine, reader.jid.split("/")[0], service, node_name)
    assert node is not None
    assert node["sync_state"] == "ERROR"


async def test_a_failed_connect_is_retried_with_backoff_until_the_server_is_there(
    prosody: LocalProsody,
    new_account: NewAccount,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="pubsub_cache.xmpp.ingest")
    proxy = PgProxy((prosody.host, prosody.port))  # a TCP proxy, here in front of Prosody
    proxy.go_down()  # the port answers every connection with a reset
    proxy._thread.start()
    try:
        account = dataclasses.replace(new_account("cache"), port=proxy.port)
        event_log = EventLog(engine)
        daemon = Ingest(
            account, event_log, ReadModelDirectory(engine, default_registry()), options=FAST
        )
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            await eventually(lambda: proxy.refused >= 3)
            assert daemon.sessions == 0
            retries = [r.message for r in caplog.records if "next attempt in" in r.message]
            delays = [float(m.rsplit("next attempt in ", 1)[1].split()[0]) for m in retries]
            assert len(delays) >= 2
            assert delays[1] > delays[0]  # backing off
            proxy.come_back()
            await eventually(lambda: daemon.sessions == 1)
            group.cancel_scope.cancel()
        event_log.close()
    finally:
        proxy.close()


async def test_a_failed_keepalive_ends_the_session_and_the_ingest_reconnects(
    prosody: LocalProsody,
    new_account: NewAccount,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level("WARNING", logger="pubsub_cache.xmpp.ingest")
    pings: dict[object, int] = {}  # per session; the first is connect()'s presence check
    real = PubsubClient.ping

    async def ping(self: PubsubClient, *, timeout: float | None = None) -> None:
        pings[self.xmpp] = pings.get(self.xmpp, 0) + 1
        if len(pings) == 1 and pings[self.xmpp] == 2:  # its first keepalive: no answer in time
            raise XmppTimeout("ping", service=self.xmpp.boundjid.domain, node=None, seconds=0.1)
        await real(self, timeout=timeout)

    monkeypatch.setattr(PubsubClient, "ping", ping)
    options = dataclasses.replace(FAST, keepalive=0.1)
    async with running_daemon(engine, new_account("cache"), options=options) as daemon:
        await eventually(lambda: daemon.sessions == 2)
        await eventually(lambda: list(pings.values())[-1] >= 3)  # the new session's keepalive
        assert daemon.sessions == 2
        assert len(pings) == 2
    assert "keepalive failed, ending the session" in caplog.text


async def test_an_exception_in_the_notification_handler_is_logged_and_the_next_is_ingested(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    calls = 0

    def translate(message: ET.Element, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a translation bug")
        return events_from_message(message, **options)

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")
        await eventually(lambda: synced(engine, cache.jid, service, node_name))
        await daemon.wait_idle()
        monkeypatch.setattr(ingest_module, "events_from_message", translate)
        await publisher.publish(service, node_name, "one", PAYLOAD)
        await eventually(lambda: "notification not ingested" in caplog.text)
        await publisher.publish(service, node_name, "two", PAYLOAD)
        await eventually(lambda: "two" in cached_items(engine, cache.jid, service, node_name))
        await daemon.wait_idle()

    assert "RuntimeError: a translation bug" in caplog.text
    notified = [
        item.id
        for event in logged(EventLog(engine))
        if isinstance(event, ItemsPublished)
        and event.node == node_name
        and event.source == "notification"
        for item in event.items
    ]
    assert notified == ["two"]
