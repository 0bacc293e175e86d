"""Prosody restarts under the running daemon: it reconnects, catches up, and loses nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp.backoff import Backoff
from xmpp_fixtures import FAST, account_on, cached_items, eventually, running_daemon, session_of

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]


@pytest.fixture
def durable_prosody(
    prosody_installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalProsody]:
    """A Prosody of its own whose pubsub data is on disk, as on a real server: nodes, items and
    subscriptions survive the restart (the shared test server keeps them in memory)."""
    monkeypatch.setenv("PUBSUB_CACHE_PROSODY_PUBSUB_STORAGE", "internal")
    with LocalProsody(admins=["publisher"], workdir=tmp_path / "prosody") as server:
        yield server


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_daemon_reconnects_after_a_server_restart_and_loses_nothing(
    durable_prosody: LocalProsody, engine: Engine
) -> None:
    server = durable_prosody
    publisher, cache = account_on(server, "publisher"), account_on(server, "cache")
    service, node = server.pubsub_service, "restarted"

    def cached() -> set[str]:
        return set(cached_items(engine, cache.jid, service, node))

    async with session_of(publisher) as client:
        await client.create_node(service, node, {"notify_retract": True})
        await client.publish(service, node, "before", "<p xmlns='urn:test'>1</p>")
    # The daemon comes back 3 s after losing the server: time to change things meanwhile (1 s
    # was too short on a loaded machine: the daemon was back before the publisher was done).
    slow_return = dataclasses.replace(FAST, reconnect=Backoff(initial=3.0, cap=3.0, jitter=0))
    async with running_daemon(engine, cache, options=slow_return) as daemon:
        daemon.request_sync(service, node, "test")
        await eventually(lambda: cached() == {"before"})

        await anyio.to_thread.run_sync(server.restart)
        # Published and retracted while the daemon is away: only its catch-up can see these.
        async with session_of(publisher) as client:
            await client.publish(service, node, "during", "<p xmlns='urn:test'>2</p>")
            await client.retract(service, node, "before")
        assert daemon.sessions == 1
        await eventually(lambda: cached() == {"during"})
        assert daemon.sessions == 2

        async with session_of(publisher) as client:  # and live notifications flow again
            await client.publish(service, node, "after", "<p xmlns='urn:test'>3</p>")
        await eventually(lambda: cached() == {"during", "after"})
