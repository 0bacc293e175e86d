"""The daemon's own counters, through a real Prosody (issue 11): a sync, a genuine notification
and a forged one move the counters a scrape of the metrics endpoint shows."""

from __future__ import annotations

import logging

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.metrics import serve_metrics
from pubsub_cache.xmpp.pubsub import PubsubClient
from tests_support import scrape
from xmpp_fixtures import NewAccount, eventually, running_daemon, session_of
from xmpp_fixtures import cached_items as cached

pytestmark = pytest.mark.anyio

ATOM = "http://www.w3.org/2005/Atom"


def entry(title: str) -> str:
    return f'<entry xmlns="{ATOM}"><title>{title}</title></entry>'


def own_words(record: logging.LogRecord) -> str:
    """The record's message, with any exception given as an argument left out (an error's
    own text names what it was about)."""
    args = record.args if isinstance(record.args, tuple) else ()
    shown = tuple("<error>" if isinstance(arg, BaseException) else arg for arg in args)
    return str(record.msg) % shown if shown else record.getMessage()


async def samples_of(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by name and sorted labels."""
    _head, body = await scrape(port)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def test_syncs_and_notifications_are_counted_by_the_daemon(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pubsub_cache")
    service, cache, mallory = prosody.pubsub_service, new_account("cache"), new_account("mallory")
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "first", entry("one"))

    async with anyio.create_task_group() as group:
        port = await group.start(serve_metrics, engine, 0)
        async with running_daemon(engine, cache) as daemon:
            daemon.request_sync(service, node_name, "test")
            await eventually(lambda: len(cached(engine, cache.jid, service, node_name)) == 1)
            await publisher.publish(service, node_name, "second", entry("two"))
            await eventually(lambda: len(cached(engine, cache.jid, service, node_name)) == 2)
            async with session_of(mallory) as attacker:  # its server stamps its full JID
                attacker.xmpp.send_raw(
                    f"<message xmlns='jabber:client' to='{cache.jid}' type='headline'>"
                    "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
                    f"<items node='{node_name}'><item id='fake'>{entry('forged')}</item>"
                    "</items></event></message>"
                )
                rejected = ("pubsub_cache_notifications_rejected_total", (("reason", "full-jid"),))
                await eventually(lambda: daemon.notifications >= 2)
            await daemon.wait_idle()  # the rejection's event appended, not only handled
            metrics = await samples_of(port)
        group.cancel_scope.cancel()

    assert metrics["pubsub_cache_syncs_total", (("outcome", "COMPLETED"),)] >= 1
    assert metrics["pubsub_cache_notifications_accepted_total", ()] >= 1
    assert metrics[rejected] == 1
    appended = "pubsub_cache_events_appended_total"
    assert metrics[appended, (("type", "items-published"),)] == 1  # the notification
    assert metrics[appended, (("type", "sync-started"),)] >= 1
    assert metrics[appended, (("type", "notification-rejected"),)] == 1
    assert metrics["pubsub_cache_publish_to_projected_seconds_count", ()] == 1
    assert metrics["pubsub_cache_items_projected_total", (("projector", "main"),)] == 2
    # The daemon's lines name the account and node as keys, never inside the message.
    ours = [r for r in caplog.records if r.name.startswith("pubsub_cache.")]
    assert not [own_words(r) for r in ours if cache.jid in own_words(r)]
    assert not [own_words(r) for r in ours if node_name in own_words(r)]
    [finished] = [r for r in ours if r.getMessage() == "sync finished: COMPLETED"]
    assert (finished.account, finished.service, finished.node) == (cache.jid, service, node_name)  # type: ignore[attr-defined]
    assert finished.sync_id  # type: ignore[attr-defined]
