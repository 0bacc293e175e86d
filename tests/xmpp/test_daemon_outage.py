"""The whole daemon (ingest and projector, as ``pubsub-cache run``) rides out a PostgreSQL
outage: notifications that arrive meanwhile, notify-only ones included, are kept (their payloads
fetched over XMPP) and are all in the read model once the database is back (issue 10, point 3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pg_proxy import ProxiedDatabase, proxied_postgres
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp.client import PubsubClient
from xmpp_fixtures import NewAccount, cached_items, eventually, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]


@pytest.fixture
def db() -> Iterator[ProxiedDatabase]:
    """A migrated PostgreSQL scratch database behind a proxy the test controls."""
    with proxied_postgres() as database:
        yield database


def entry(text: str) -> str:
    """A payload the test can recognise (stored as the server serialises it, not byte for
    byte: look for ``text`` in it)."""
    return f"<p xmlns='urn:test:outage'>{text}</p>"


async def test_notifications_during_a_database_outage_all_reach_the_read_model(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    db: ProxiedDatabase,
    node_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub_cache")
    service, cache = prosody.pubsub_service, new_account("cache")
    pushed, quiet = node_name, f"{node_name}-notify-only"
    await publisher.create_node(service, pushed)
    await publisher.create_node(service, quiet, {"deliver_payloads": False})
    await publisher.publish(service, pushed, "before", entry("before"))
    await publisher.publish(service, quiet, "quiet-before", entry("quiet before"))

    def cached(node: str) -> dict[str, str | None]:
        return cached_items(db.direct, cache.jid, service, node)

    def said(logger: str, words: str) -> int:
        return sum(r.name == logger and words in r.getMessage() for r in caplog.records)

    def noticed(*loggers: str) -> bool:
        return all(said(logger, "database unavailable") for logger in loggers)

    async with running_daemon(db.engine, cache) as daemon:
        daemon.request_sync(service, pushed, "test")
        daemon.request_sync(service, quiet, "test")
        await eventually(lambda: set(cached(pushed)) == {"before"})
        await eventually(lambda: set(cached(quiet)) == {"quiet-before"})
        await daemon.wait_idle()
        notified, fetched = daemon.notifications, daemon.fetcher.fetched

        db.proxy.go_down()  # the projector is idle, the writer has nothing to write
        await publisher.publish(service, pushed, "during", entry("during"))
        await publisher.publish(service, quiet, "quiet-during", entry("quiet during"))
        # Both notifications arrived and the quiet item's payload was fetched over XMPP, while
        # the database was away: all of it waits in the writer's queue.
        await eventually(lambda: daemon.notifications == notified + 2)
        await eventually(lambda: daemon.fetcher.fetched == fetched + 1)
        # The projector (idle) and the writer (busy) each saw the outage and kept retrying.
        await eventually(
            lambda: noticed("pubsub_cache.projector.runner", "pubsub_cache.xmpp.writer")
        )
        await eventually(lambda: db.proxy.refused >= 10)
        assert daemon.writer.pending > 0
        db.proxy.come_back()

        await eventually(lambda: set(cached(pushed)) == {"before", "during"}, timeout=30)
        await eventually(lambda: "quiet during" in (cached(quiet).get("quiet-during") or ""))

        await publisher.publish(service, pushed, "after", entry("after"))  # live again
        await eventually(lambda: "after" in cached(pushed))

    for component in ("pubsub_cache.projector.runner", "pubsub_cache.xmpp.writer"):
        assert said(component, "database unavailable") == 1, component
        assert said(component, "database back") == 1, component
