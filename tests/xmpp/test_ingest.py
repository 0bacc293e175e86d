"""The daemon end to end against the real Prosody: notifications and syncs, through the log and
the projector, into the read model."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import (
    ItemsPublished,
    NotificationRejected,
    SyncCompleted,
    SyncRequested,
    SyncStarted,
)
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_counter
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.directory import NodeRef, ReadModelDirectory
from pubsub_cache.xmpp.ingest import Ingest
from xmpp_fixtures import (
    FAST,
    NewAccount,
    befriend,
    cached_items,
    cached_node,
    eventually,
    running_daemon,
    session_of,
)

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

ATOM = "http://www.w3.org/2005/Atom"
NOW = datetime.now(UTC)
MICROBLOG = "urn:xmpp:microblog:0"


def entry(title: str) -> str:
    return f'<entry xmlns="{ATOM}"><title>{title}</title></entry>'


async def test_publish_retract_purge_and_delete_reach_the_read_model(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name, {"notify_retract": True})
    await publisher.publish(service, node_name, "old", entry("before the daemon"))

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")

        def items() -> dict[str, str | None]:
            return cached_items(engine, cache.jid, service, node_name)

        await eventually(lambda: set(items()) == {"old"})
        node = cached_node(engine, cache.jid, service, node_name)
        assert node is not None
        assert (node["sync_state"], node["subscribed"]) == ("COMPLETED", True)

        await publisher.publish(service, node_name, "a", entry("first"))
        await publisher.publish(service, node_name, "b", entry("second"))
        await eventually(lambda: set(items()) == {"old", "a", "b"})
        assert items()["a"] == entry("first")

        await publisher.retract(service, node_name, "a")
        await eventually(lambda: set(items()) == {"old", "b"})

        await publisher.purge(service, node_name)
        await eventually(lambda: items() == {})

        await publisher.delete_node(service, node_name)
        await eventually(
            lambda: (cached_node(engine, cache.jid, service, node_name) or {})["deleted"]
        )


async def test_notify_only_items_get_their_payload_fetched(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name, {"deliver_payloads": False})

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")
        await daemon.wait_idle()
        await publisher.publish(service, node_name, "quiet", entry("fetched, not pushed"))

        await eventually(
            lambda: (
                cached_items(engine, cache.jid, service, node_name).get("quiet")
                == entry("fetched, not pushed")
            )
        )

    events = [record.event for record in EventLog(engine).read(after=0)]
    published = [e for e in events if isinstance(e, ItemsPublished) and e.node == node_name]
    assert [(e.source, e.items[0].payload is None) for e in published] == [
        ("notification", True),
        ("fetch", False),
    ]


async def test_a_contacts_pep_microblog_is_cached_and_synced(
    new_account: NewAccount, engine: Engine
) -> None:
    alice, bob = new_account("alice"), new_account("bob")
    async with session_of(alice) as alice_client, session_of(bob) as bob_client:
        await befriend(alice_client, bob_client)
        # Prosody's PEP nodes keep 1 item unless configured to keep more.
        await bob_client.create_node(bob.jid, MICROBLOG, {"max_items": 10})
        await bob_client.publish_pep(MICROBLOG, "early", entry("before alice's daemon"))

    async with running_daemon(engine, alice), session_of(bob) as bob_client:
        await bob_client.publish_pep(MICROBLOG, "live", entry("while it runs"))

        await eventually(
            lambda: set(cached_items(engine, alice.jid, bob.jid, MICROBLOG)) == {"early", "live"}
        )
        await eventually(
            lambda: (
                (cached_node(engine, alice.jid, bob.jid, MICROBLOG) or {})["sync_state"]
                == "COMPLETED"
            )
        )
    node = cached_node(engine, alice.jid, bob.jid, MICROBLOG)
    assert node is not None
    assert (node["analyser"], node["type"], node["to_sync"]) == ("xep-0277", "blog", True)


async def test_a_forged_notification_changes_nothing_and_is_counted(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache, mallory = prosody.pubsub_service, new_account("cache"), new_account("mallory")
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "genuine", entry("real"))

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")
        await eventually(
            lambda: set(cached_items(engine, cache.jid, service, node_name)) == {"genuine"}
        )
        async with session_of(mallory) as attacker:
            # The server stamps mallory's full JID over the forged from.
            forged = (
                f"<message xmlns='jabber:client' to='{cache.jid}' from='{service}' "
                "type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'>"
                f"<items node='{node_name}'><retract id='genuine'/>"
                f"<item id='fake'>{entry('forged')}</item></items></event></message>"
            )
            attacker.xmpp.send_raw(forged)
            await eventually(lambda: rejected(engine, cache.jid) == 1)

    assert set(cached_items(engine, cache.jid, service, node_name)) == {"genuine"}
    [reject] = [
        r.event for r in EventLog(engine).read(after=0) if isinstance(r.event, NotificationRejected)
    ]
    assert reject.service.startswith(f"{mallory.jid}/")
    assert reject.node == node_name


def rejected(engine: Engine, account: str) -> int:
    query = sa.select(pubsub_counter.c.value).where(
        pubsub_counter.c.account == account, pubsub_counter.c.name == "rejected"
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


async def test_catch_up_after_downtime_makes_the_read_model_match_the_server(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    kept, purged = f"{node_name}-kept", f"{node_name}-purged"
    for node in (kept, purged):
        await publisher.create_node(service, node)
        for item in ("a", "b", "c"):
            await publisher.publish(service, node, item, entry(f"{node} {item}"))
    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, kept, "test")
        daemon.request_sync(service, purged, "test")
        await daemon.wait_idle()
        await eventually(lambda: len(cached_items(engine, cache.jid, service, purged)) == 3)

    # While the daemon is down: notifications are lost for good (headline messages).
    await publisher.retract(service, kept, "a")
    await publisher.publish(service, kept, "b", entry("b, edited"))
    await publisher.publish(service, kept, "d", entry("new"))
    await publisher.purge(service, purged)

    async with running_daemon(engine, cache):
        server = {i.id: i.payload for i in (await publisher.get_items(service, kept)).items}
        await eventually(lambda: cached_items(engine, cache.jid, service, kept) == server)
        await eventually(lambda: cached_items(engine, cache.jid, service, purged) == {})
    assert set(server) == {"b", "c", "d"}
    assert server["b"] == entry("b, edited")


async def test_a_sync_requested_in_the_log_is_carried_out(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "x", entry("x"))
    request = SyncRequested(
        account=cache.jid, service=service, node=node_name, observed_at=datetime.now(UTC)
    )

    async with running_daemon(engine, cache):
        await anyio.to_thread.run_sync(EventLog(engine).append, [request])
        await eventually(lambda: set(cached_items(engine, cache.jid, service, node_name)) == {"x"})
        await eventually(
            lambda: (
                (cached_node(engine, cache.jid, service, node_name) or {})["sync_state"]
                == "COMPLETED"
            )
        )
    events = [r.event for r in EventLog(engine).read(after=0) if r.event.account == cache.jid]
    assert sum(isinstance(e, SyncStarted) for e in events) == 1  # polled often, started once
    assert any(isinstance(e, SyncCompleted) and e.complete for e in events)


async def test_the_ingest_alone_writes_the_log_without_touching_the_read_model(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    log = EventLog(engine)

    async with running_daemon(engine, cache, projector=False) as daemon:
        daemon.request_sync(service, node_name, "test")
        await daemon.wait_idle()
        await publisher.publish(service, node_name, "n", entry("n"))
        await eventually(lambda: any(isinstance(r.event, ItemsPublished) for r in log.read()))

    kinds = [type(r.event).__name__ for r in log.read() if r.event.account == cache.jid]
    assert kinds == [
        "SyncStarted",
        "SubscriptionChanged",
        "SyncPageFetched",
        "SyncCompleted",
        "ItemsPublished",
    ]
    assert cached_node(engine, cache.jid, service, node_name) is None


async def test_a_node_in_error_is_retried_until_the_sync_succeeds(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name, {"access_model": "whitelist"})
    await publisher.publish(service, node_name, "x", entry("members only"))

    def state() -> str | None:
        return (cached_node(engine, cache.jid, service, node_name) or {}).get("sync_state")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(service, node_name, "test")
        await eventually(lambda: state() == "ERROR")
        node = cached_node(engine, cache.jid, service, node_name)
        assert node is not None
        assert "forbidden" in node["sync_reason"] or "not-authorized" in node["sync_reason"]

        await publisher.configure_node(service, node_name, {"access_model": "open"})
        await eventually(lambda: state() == "COMPLETED")
        assert set(cached_items(engine, cache.jid, service, node_name)) == {"x"}


class FlakyDirectory(ReadModelDirectory):
    """The read model, unreachable for the first ``failures`` reads."""

    def __init__(self, engine: Engine, failures: int) -> None:
        super().__init__(engine, default_registry())
        self.failures = failures

    def nodes_to_resync(self, account: str) -> list[NodeRef]:
        if self.failures > 0:
            self.failures -= 1
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is away"))
        return super().nodes_to_resync(account)


async def test_an_unreachable_read_model_delays_the_catch_up_without_stopping_the_ingest(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    log = EventLog(engine)
    log.append([SyncRequested(account=cache.jid, service=service, node=node_name, observed_at=NOW)])
    Projector(engine, registry=default_registry()).catch_up()  # the request is in the model
    directory = FlakyDirectory(engine, failures=2)
    ingest = Ingest(cache, log, directory, options=FAST)

    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            await group.start(ingest.run)
            while not any(isinstance(r.event, SyncCompleted) for r in log.read()):
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()

    assert directory.failures == 0
