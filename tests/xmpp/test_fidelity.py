"""The cache answers what the server answers (invariant 10), on Prosody and ejabberd, on SQLite
and PostgreSQL: the situations where it used to lie (issue 9), each followed by the daemon
and compared with the server's own answers (``tests/fidelity.py``).

On Prosody items come in order of last publication and evictions beyond ``max_items`` are
silent; on ejabberd in order of creation, with retractions for evicted items only when
``notify_retract`` is on. The cache account is a plain subscriber: it cannot read the nodes'
configuration, so evictions are learned by reconciliation.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy.engine import Engine

from fidelity import Node, assert_answers_equal, cached_page, converged, listing_of, settled
from pubsub_cache.ops.dev.xmpp_server import LocalXmppServer
from pubsub_cache.query import Page
from pubsub_cache.xmpp import ingest
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.ingest import XmppAccount
from xmpp_fixtures import (
    account_on,
    befriend,
    eventually,
    running_daemon,
    session_of,
    session_on,
)

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

ATOM = "http://www.w3.org/2005/Atom"
MICROBLOG = "urn:xmpp:microblog:0"


def entry(title: str) -> str:
    return f'<entry xmlns="{ATOM}"><title>{title}</title></entry>'


@pytest.fixture
async def publisher(xmpp_server: LocalXmppServer) -> AsyncIterator[PubsubClient]:
    """The admin account's session (only admins create nodes on Prosody's component)."""
    async with session_on(xmpp_server, "publisher") as client:
        yield client


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def new_node(
    server: LocalXmppServer, engine: Engine, publisher: PubsubClient, name: str, max_items: int
) -> tuple[XmppAccount, Node]:
    """A fresh cache account and a fresh node of the server's pubsub service (its publisher
    owns it), as that account sees it."""
    cache = account_on(server, fresh("cache"))
    node = Node(server, engine, cache.jid, server.pubsub_service, fresh(name))
    await publisher.create_node(node.service, node.node, {"max_items": max_items})
    return cache, node


async def publish(client: PubsubClient, node: Node, *item_ids: str, tag: str = "") -> None:
    for item_id in item_ids:
        await client.publish(node.service, node.node, item_id, entry(f"{item_id}{tag}"))


async def test_items_evicted_on_publish_leave_the_cache(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "evict", 3)
    await publish(publisher, node, "it1")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)
        await publish(publisher, node, "it2", "it3", "it4", "it5")
        live = await converged(daemon, publisher, node)
        assert [item_id for item_id, _ in live] == ["it3", "it4", "it5"]
        await assert_answers_equal(publisher, node, random.Random(1))


async def test_a_lowered_max_items_evicts_as_the_server_does(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "lowered", 30)
    await publish(publisher, node, *(f"it{n:02}" for n in range(12)))

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)
        # Prosody evicts at once, silently; ejabberd at the next publication. Neither says so
        # to a subscriber: the periodic reconciliation (here: asked for) finds out.
        await publisher.configure_node(node.service, node.node, {"max_items": 3})
        daemon.reconciler.request(NodeRef(node.service, node.node))
        await converged(daemon, publisher, node)
        await publish(publisher, node, "it12")
        live = await converged(daemon, publisher, node)
        assert [item_id for item_id, _ in live] == ["it10", "it11", "it12"]
        await assert_answers_equal(publisher, node, random.Random(2))


async def test_a_contacts_pep_node_created_with_defaults(
    xmpp_server: LocalXmppServer, engine: Engine
) -> None:
    # A PEP node created by a first publication keeps 1 item on both servers, and neither
    # tells a contact of the eviction.
    alice = account_on(xmpp_server, fresh("alice"))
    bob = account_on(xmpp_server, fresh("bob"))
    async with session_of(alice) as alice_client, session_of(bob) as bob_client:
        await befriend(alice_client, bob_client)
        await bob_client.publish_pep(MICROBLOG, "first", entry("first"))

    node = Node(xmpp_server, engine, alice.jid, bob.jid, MICROBLOG)
    async with running_daemon(engine, alice) as daemon, session_of(bob) as bob_client:
        await converged(daemon, bob_client, node)
        for name in ("second", "third"):
            await bob_client.publish_pep(MICROBLOG, name, entry(name))
        live = await converged(daemon, bob_client, node)
        assert [item_id for item_id, _ in live] == ["third"]
        await assert_answers_equal(bob_client, node, random.Random(3), shapes=4)


async def test_the_last_item_pushed_before_the_sync_page_keeps_its_place(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "pushed", 50)
    await publish(publisher, node, "it1", "it2", "it3")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        live = await converged(daemon, publisher, node)
        assert [item_id for item_id, _ in live] == ["it1", "it2", "it3"]
        await assert_answers_equal(publisher, node, random.Random(4))


async def test_publishes_while_the_daemon_is_down_take_their_places(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "down", 50)
    await publish(publisher, node, "it1")
    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)

    await publish(publisher, node, "it2", "it3")
    async with running_daemon(engine, cache) as daemon:
        await publish(publisher, node, "it4")  # during the catch-up
        live = await converged(daemon, publisher, node)
        assert [item_id for item_id, _ in live] == ["it1", "it2", "it3", "it4"]
        await assert_answers_equal(publisher, node, random.Random(5))


async def test_a_republished_id_takes_the_servers_place(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "again", 50)
    await publish(publisher, node, "a", "b", "c")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)
        await publish(publisher, node, "a", tag=" again")
        live = await converged(daemon, publisher, node)
        expected = ["b", "c", "a"] if xmpp_server.software == "prosody" else ["a", "b", "c"]
        assert [item_id for item_id, _ in live] == expected
        await assert_answers_equal(publisher, node, random.Random(6))


async def test_purge_delete_and_recreate(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache, node = await new_node(xmpp_server, engine, publisher, "cycle", 5)
    await publish(publisher, node, "a", "b")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)
        await publisher.purge(node.service, node.node)
        assert await converged(daemon, publisher, node) == []
        await publish(publisher, node, "c")
        await converged(daemon, publisher, node)

        await publisher.delete_node(node.service, node.node)
        await settled(daemon, engine)
        await publisher.create_node(node.service, node.node, {"max_items": 2})
        await publish(publisher, node, "d", "e", "f")
        daemon.request_sync(node.service, node.node, "re-created")
        live = await converged(daemon, publisher, node)
        assert [item_id for item_id, _ in live] == ["e", "f"]
        await assert_answers_equal(publisher, node, random.Random(7))


async def test_an_unknown_servers_order_is_learned_from_what_its_listings_show(
    xmpp_server: LocalXmppServer,
    publisher: PubsubClient,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As for a server whose software the cache does not know: no name to go by.
    monkeypatch.setattr(ingest, "order_from_identities", lambda _identities: (None, None))
    cache, node = await new_node(xmpp_server, engine, publisher, "unknown", 50)
    await publish(publisher, node, "a", "b", "c")

    async with running_daemon(engine, cache) as daemon:
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)  # nothing re-published yet: both orders agree
        await publish(publisher, node, "a", tag=" again")
        await eventually(lambda: "again" in str(listing_of(cached_page(node))))
        daemon.request_sync(node.service, node.node, "a re-read")
        live = await converged(daemon, publisher, node)
        expected = ["b", "c", "a"] if xmpp_server.software == "prosody" else ["a", "b", "c"]
        assert [item_id for item_id, _ in live] == expected
        page = await anyio.to_thread.run_sync(lambda: cached_page(node))
        assert isinstance(page, Page)
        assert page.order == ("modification" if xmpp_server.software == "prosody" else "creation")
