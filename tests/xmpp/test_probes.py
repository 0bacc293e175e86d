"""One reconciliation probe per publication for all the accounts of a daemon (issue 13,
fan-out; xmpp/probes.py), against the real Prosody on both databases: accounts of one pool
subscribed to one node whose ``max_items`` they cannot read. A publication is probed once on
the wire, and every view stays right; an eviction (Prosody's, silent) is still found by every
account. The board's time rule alone: tests/unit/test_probe_board.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.events.types import Item
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp.accounts import IngestPool
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.reconcile import ReconcileStats
from xmpp_fixtures import FAST, cached_items, eventually, holding, idle, serving

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

ACCOUNTS = 6

#: Checks half a second after a publication: every account has its notification by then, so
#: that the first probe sent comes after every account's trigger.
OPTIONS = replace(FAST, reconcile=replace(FAST.reconcile, after_publish=0.5))


def entry(title: str) -> str:
    return f'<entry xmlns="http://www.w3.org/2005/Atom"><title>{title}</title></entry>'


def probes_sent(monkeypatch: pytest.MonkeyPatch, node: str) -> list[list[str]]:
    """The ids of every probe any session sends to ``node`` from now on (a probe is the only
    ``<items>`` request naming item ids)."""
    sent: list[list[str]] = []
    original = PubsubClient.get_items_by_id

    async def counted(
        self: PubsubClient, service: str, name: str, item_ids: list[str], **options: Any
    ) -> list[Item]:
        if name == node:
            sent.append(item_ids)
        return await original(self, service, name, item_ids, **options)

    monkeypatch.setattr(PubsubClient, "get_items_by_id", counted)
    return sent


def stats(pool: IngestPool) -> list[ReconcileStats]:
    return [ingest.reconciler.stats for ingest in pool.ingests.values()]


def total(pool: IngestPool, count: Callable[[ReconcileStats], int]) -> int:
    return sum(count(each) for each in stats(pool))


async def test_a_publication_notified_to_every_account_is_probed_once(
    prosody: LocalProsody,
    publisher: PubsubClient,
    engine: Engine,
    node_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    for item_id in ("a", "b", "c"):
        await publisher.publish(service, node_name, item_id, entry(item_id))
    sent = probes_sent(monkeypatch, node_name)
    async with serving(prosody, engine, ACCOUNTS, service, node_name, options=OPTIONS) as (
        pool,
        accounts,
    ):
        await idle(pool)
        assert sent == []

        await publisher.publish(service, node_name, "d", entry("d"))
        await eventually(holding(engine, accounts, service, node_name, "d"))
        # Every account's check was settled by a probe: nothing evicted, no listing.
        await eventually(lambda: total(pool, lambda s: s.probes) == ACCOUNTS)
        await idle(pool)

        assert len(sent) == 1  # one request on the wire, not one per account
        assert total(pool, lambda s: s.probes_shared) == ACCOUNTS - 1
        assert (pool.probes.sent, pool.probes.shared) == (1, ACCOUNTS - 1)
        assert total(pool, lambda s: s.checks + s.differences + s.failures) == 0
        for account in accounts:
            assert set(cached_items(engine, account.jid, service, node_name)) == set("abcd")

        # The next publication is probed again: the first answer came before its notifications.
        await publisher.publish(service, node_name, "e", entry("e"))
        await eventually(lambda: total(pool, lambda s: s.probes) == 2 * ACCOUNTS)
        assert len(sent) == 2
        assert pool.probes.shared == 2 * (ACCOUNTS - 1)


async def test_an_eviction_is_found_in_every_view(
    prosody: LocalProsody,
    publisher: PubsubClient,
    engine: Engine,
    node_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name, {"max_items": 3})
    for item_id in ("a", "b", "c"):
        await publisher.publish(service, node_name, item_id, entry(item_id))
    sent = probes_sent(monkeypatch, node_name)
    async with serving(prosody, engine, ACCOUNTS, service, node_name, options=OPTIONS) as (
        pool,
        accounts,
    ):
        await idle(pool)

        await publisher.publish(service, node_name, "d", entry("d"))  # Prosody drops "a"

        def evicted() -> bool:
            return all(
                set(cached_items(engine, account.jid, service, node_name)) == set("bcd")
                for account in accounts
            )

        await eventually(evicted)
        await idle(pool)
        # "a" is gone: no answer was shared, each account probed and listed for itself.
        assert len(sent) == ACCOUNTS
        assert pool.probes.shared == 0
        assert total(pool, lambda s: s.probes_shared) == 0
        assert [(s.checks, s.differences) for s in stats(pool)] == [(1, 1)] * ACCOUNTS
