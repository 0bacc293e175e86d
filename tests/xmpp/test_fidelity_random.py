"""Random histories against each server: after every step the cache lists what the server
lists (invariant 10), whatever the sequence of publications, re-publications, retractions,
purges, limit changes and daemon restarts; and a daemon killed with SIGKILL in the middle of
a burst comes back to the server's answer.

Seeded and bounded: the same histories run every time, so a failure names its seed and step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest
from sqlalchemy.engine import Engine

from fidelity import Node, assert_answers_equal, cached, converged, listing_of, live_listing
from pubsub_cache.ops.dev.xmpp_server import LocalXmppServer
from pubsub_cache.query import Page
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.ingest import Ingest, XmppAccount
from tests_support import SCRIPT
from xmpp_fixtures import account_on, running_daemon, session_on

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

ATOM = "http://www.w3.org/2005/Atom"
STEPS = 24


def entry(title: str) -> str:
    return f'<entry xmlns="{ATOM}"><title>{title}</title></entry>'


@pytest.fixture
async def publisher(xmpp_server: LocalXmppServer) -> AsyncIterator[PubsubClient]:
    async with session_on(xmpp_server, "publisher") as client:
        yield client


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_histories_keep_the_cache_equal_to_the_server(
    seed: int, xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    rng = random.Random(f"{seed}-{xmpp_server.software}")
    cache = account_on(xmpp_server, f"cache-{uuid.uuid4().hex[:8]}")
    node = Node(
        xmpp_server, engine, cache.jid, xmpp_server.pubsub_service, f"random-{uuid.uuid4().hex}"
    )
    await publisher.create_node(node.service, node.node, {"max_items": rng.randint(3, 8)})
    history = RandomHistory(rng, publisher, node)
    async with AsyncExitStack() as stack:
        daemon: Ingest | None = await stack.enter_async_context(running_daemon(engine, cache))
        assert daemon is not None
        daemon.request_sync(node.service, node.node, "test")
        await converged(daemon, publisher, node)  # synced once: known to every later start
        for number in range(STEPS):
            if daemon is not None and rng.random() < 0.12:
                history.log.append("daemon stops")
                await stack.aclose()
                daemon = None
            elif daemon is None and rng.random() < 0.5:
                history.log.append("daemon starts")
                daemon = await stack.enter_async_context(running_daemon(engine, cache))
            await history.step(daemon)
            if daemon is not None:
                try:
                    await converged(daemon, publisher, node)
                except AssertionError as error:
                    raise AssertionError(f"seed {seed}, step {number}: {history.log}") from error
        if daemon is None:
            daemon = await stack.enter_async_context(running_daemon(engine, cache))
        await converged(daemon, publisher, node)
        await assert_answers_equal(publisher, node, rng)


class RandomHistory:
    """One random operation at a time on a node, as its publisher (and owner)."""

    def __init__(self, rng: random.Random, publisher: PubsubClient, node: Node) -> None:
        self.rng, self.publisher, self.node = rng, publisher, node
        self.names = [f"it{n:02}" for n in range(16)]
        self.log: list[str] = []

    async def step(self, daemon: Ingest | None) -> None:
        rng, publisher, node = self.rng, self.publisher, self.node
        alive = [item_id for item_id, _ in await live_listing(publisher, node)]
        roll = rng.random()
        if roll < 0.5 or not alive:
            name = rng.choice(self.names)
            self.log.append(f"publish {name}")
            await publisher.publish(node.service, node.node, name, entry(f"{name} {rng.random()}"))
        elif roll < 0.65:
            name = rng.choice(alive)
            self.log.append(f"re-publish {name}")
            await publisher.publish(node.service, node.node, name, entry(f"{name} again"))
        elif roll < 0.8:
            name = rng.choice(alive)
            self.log.append(f"retract {name}")
            await publisher.retract(node.service, node.node, name)
        elif roll < 0.87:
            self.log.append("purge")
            await publisher.purge(node.service, node.node)
        else:
            limit = rng.randint(2, 8)
            self.log.append(f"max_items {limit}")
            await publisher.configure_node(node.service, node.node, {"max_items": limit})
            if daemon is not None:  # what the periodic reconciliation would find, sooner
                daemon.reconciler.request(NodeRef(node.service, node.node))


async def test_a_daemon_killed_in_the_middle_comes_back_to_the_servers_answer(
    xmpp_server: LocalXmppServer, publisher: PubsubClient, engine: Engine
) -> None:
    cache = account_on(xmpp_server, f"cache-{uuid.uuid4().hex[:8]}")
    node = Node(
        xmpp_server, engine, cache.jid, xmpp_server.pubsub_service, f"killed-{uuid.uuid4().hex}"
    )
    await publisher.create_node(node.service, node.node, {"max_items": 10})
    await publisher.publish(node.service, node.node, "first", entry("first"))
    env = _environment(engine, cache)
    requested = subprocess.run(
        [SCRIPT, "sync", node.service, node.node], env=env, capture_output=True, text=True
    )
    assert requested.returncode == 0, requested.stderr

    daemon = _start(env)
    try:
        await _eventually_equal(publisher, node)
        for n in range(30):  # a burst: evictions, and a kill while it is being ingested
            await publisher.publish(node.service, node.node, f"b{n:02}", entry(f"burst {n}"))
            if n == 12:
                await _wait_for_item(node, "b05")
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(10)
        await publisher.publish(node.service, node.node, "first", entry("first, again"))
        daemon = _start(env)
        live = await _eventually_equal(publisher, node)
        # Evicted by the burst on both servers: published again, it is the newest.
        assert [item_id for item_id, _ in live][-1] == "first"
    finally:
        daemon.kill()
        daemon.wait(10)
    await assert_answers_equal(publisher, node, random.Random(9), shapes=6)


def _environment(engine: Engine, account: XmppAccount) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    return env | {
        "PUBSUB_CACHE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PUBSUB_CACHE_JID": account.jid,
        "PUBSUB_CACHE_PASSWORD": account.password,
        "PUBSUB_CACHE_XMPP_HOST": account.host or "",
        "PUBSUB_CACHE_XMPP_PORT": str(account.port),
        "PUBSUB_CACHE_XMPP_TLS": account.tls,
        "PUBSUB_CACHE_LOG_LEVEL": "WARNING",
    }


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SCRIPT, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _wait_for_item(node: Node, item_id: str, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while True:
            page = await cached(node)
            if isinstance(page, Page) and item_id in {item.id for item in page.items}:
                return
            await anyio.sleep(0.02)


async def _eventually_equal(
    client: PubsubClient, node: Node, timeout: float = 60
) -> list[tuple[str, str | None]]:
    # A daemon in another process: no idle signal to wait for, only the answers themselves.
    deadline = time.monotonic() + timeout
    while True:
        live = await live_listing(client, node)
        answer = listing_of(await cached(node))
        if answer == live or time.monotonic() > deadline:
            assert answer == live, "the cache (left) and the server (right) differ"
            return live
        await anyio.sleep(0.05)
