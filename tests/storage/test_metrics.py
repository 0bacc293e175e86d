"""The metrics endpoint (issue 11): scraped over HTTP and read with prometheus_client's own
parser. Every family has HELP and TYPE, label values are escaped, the counters move with real
appends and a real projection, and the listener binds where it is told."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published
from pubsub_cache import telemetry
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.events.types import NotificationRejected
from pubsub_cache.ops.metrics import render, serve_metrics
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import ingest_account
from pubsub_cache.projector.status import read_status
from tests_support import scrape

pytestmark = pytest.mark.anyio

#: An account name no real JID has, holding every character the exposition must escape.
ODD_ACCOUNT = 'say "hi"\\ to\nme@example.org'
JULIET = "juliet@capulet.lit"

MetricsServer = Callable[[str], Awaitable[int]]


def samples(text: str) -> dict[str, list[Sample]]:
    """The samples of each family in ``text``, by family name, read by prometheus_client."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], sample_name: str, /, **labels: str) -> float:
    """The one sample called ``sample_name`` with ``labels`` (0 when absent)."""
    for sample in (s for family in found.values() for s in family):
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


def force_undecodable(engine: Engine) -> None:
    """A row past the codec that cannot be decoded (an item id over the limits): parked."""
    body = msgspec.msgpack.encode(
        {
            "type": "items-published",
            "v": 1,
            "account": ACCOUNT,
            "service": SERVICE,
            "node": "poisoned",
            "observed_at": at(1),
            "source": "notification",
            "items": [{"id": "x" * 3072}],
        }
    )
    row = {"account": ACCOUNT, "service": SERVICE, "node": "poisoned", "type": "items-published"}
    with write_transaction(engine) as connection:
        connection.execute(event_table.insert(), {**row, "recorded_at": time.time(), "body": body})


async def test_a_scrape_has_help_and_type_escapes_labels_and_counts_what_happened(
    engine: Engine,
) -> None:
    with write_transaction(engine) as connection:
        connection.execute(
            ingest_account.insert(),
            {"account": ODD_ACCOUNT, "owner": "h:1:t", "state": "failed", "since": 5.0},
        )
    async with anyio.create_task_group() as group:
        port = await group.start(serve_metrics, engine, 0)
        event_log = EventLog(engine)
        now = time.time()
        fresh = published("a", "b", when=now - 1 - at(0).timestamp())
        bad = published("c", node="other", payload="<entry xmlns='urn:x'><open></entry>")
        event_log.append([fresh, bad])
        rejected = NotificationRejected(
            account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(2), reason="no from"
        )
        event_log.append([rejected])
        force_undecodable(engine)
        projector = Projector(engine, registry=default_registry(), log=event_log)
        await anyio.to_thread.run_sync(projector.catch_up)
        projector.release()
        head, body = await scrape(port)
        group.cancel_scope.cancel()
    event_log.close()

    assert head.startswith("HTTP/1.0 200")
    assert "Content-Type: text/plain; version=" in head
    families = list(text_string_to_metric_families(body))
    for family in families:
        assert family.documentation, f"{family.name} has no HELP"
        assert family.type != "unknown", f"{family.name} has no TYPE"
    found = samples(body)
    # Figures read from the database, under the names dashboards were built on.
    assert value(found, "pubsub_cache_log_head") == 4
    assert value(found, "pubsub_cache_lag_events", name="main") == 0
    assert value(found, "pubsub_cache_parked_events") == 1
    assert value(found, "pubsub_cache_rejected_notifications_total") == 1
    assert value(found, "pubsub_cache_account_state", account=ODD_ACCOUNT, state="failed") == 1
    assert 'account="say \\"hi\\"\\\\ to\\nme@example.org"' in body  # escaped, as the spec says
    # Each account's own figures: the one with cached nodes is recorded by no daemon.
    assert value(found, "pubsub_cache_account_state", account=ACCOUNT, state="unknown") == 1
    assert value(found, "pubsub_cache_account_items", account=ACCOUNT) == 3
    for state in ("NONE", "COMPLETED", "ERROR"):
        whole = value(found, "pubsub_cache_nodes", state=state)
        assert value(found, "pubsub_cache_account_nodes", account=ACCOUNT, state=state) == whole
    assert value(found, "pubsub_cache_account_nodes", account=ODD_ACCOUNT, state="NONE") == 0
    assert value(found, "pubsub_cache_account_lag_events", account=ACCOUNT) == 0
    # Counted by this process while the endpoint served.
    assert value(found, "pubsub_cache_events_appended_total", type="items-published") == 2
    assert value(found, "pubsub_cache_events_appended_total", type="notification-rejected") == 1
    assert value(found, "pubsub_cache_events_projected_total", projector="main") == 3
    assert value(found, "pubsub_cache_items_projected_total", projector="main") == 3
    assert value(found, "pubsub_cache_events_parked_total", projector="main") == 1
    assert value(found, "pubsub_cache_payload_parse_failures_total") >= 1
    assert value(found, "pubsub_cache_projector_batch_seconds_count", projector="main") >= 1
    latency = "pubsub_cache_publish_to_projected_seconds"
    assert value(found, f"{latency}_count") == 2
    assert value(found, f"{latency}_bucket", le="0.5") <= 1  # observed a second before: not fast
    assert value(found, f"{latency}_bucket", le="+Inf") == 2
    # The process's own figures.
    assert value(found, "process_cpu_seconds_total") > 0
    assert "python_info" in found
    # Once the endpoint is gone, the process counts nothing again.
    assert not telemetry.current().enabled


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
async def test_the_endpoint_listens_on_the_address_it_is_given(engine: Engine, host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    async with anyio.create_task_group() as group:
        port = await group.start(serve_metrics, engine, 0, host)
        head, body = await scrape(port, host)
        with pytest.raises(OSError, match=r"connection attempts failed|refused"):  # not elsewhere
            await anyio.connect_tcp("127.0.0.1" if host != "127.0.0.1" else "::1", port)
        group.cancel_scope.cancel()

    assert head.startswith("HTTP/1.0 200")
    assert value(samples(body), "pubsub_cache_log_head") == 0


def test_render_is_the_status_alone_in_the_exposition_format(engine: Engine) -> None:
    EventLog(engine).append([published("a")])
    with engine.connect() as connection:
        text = render(read_status(connection))

    found = samples(text)
    assert value(found, "pubsub_cache_log_head") == 1
    assert value(found, "pubsub_cache_nodes", state="NONE") == 0
    assert not any(name.startswith("process_") for name in found)


def test_each_account_has_gauges_of_its_nodes_items_and_lag(engine: Engine) -> None:
    event_log = EventLog(engine)
    event_log.append([published("a", "b"), published("x", account=JULIET, node="n")])
    projector = Projector(engine, registry=default_registry(), log=event_log)
    projector.catch_up()
    projector.release()
    event_log.append([published("y", account=JULIET, node="n"), published("z", node="m")])
    event_log.close()
    with engine.begin() as connection:  # event p recorded at 1000 + p
        connection.execute(event_table.update().values(recorded_at=1000 + event_table.c.position))
        text = render(read_status(connection, now=2000.0))

    found = samples(text)
    assert value(found, "pubsub_cache_account_nodes", account=ACCOUNT, state="NONE") == 1
    assert value(found, "pubsub_cache_account_nodes", account=JULIET, state="NONE") == 1
    assert value(found, "pubsub_cache_account_nodes", account=JULIET, state="ERROR") == 0
    assert value(found, "pubsub_cache_account_items", account=ACCOUNT) == 2
    assert value(found, "pubsub_cache_account_items", account=JULIET) == 1
    # Positions 3 (Juliet's) and 4 (Romeo's) are not applied yet.
    assert value(found, "pubsub_cache_account_lag_events", account=ACCOUNT) == 1
    assert value(found, "pubsub_cache_account_lag_seconds", account=ACCOUNT) == 2000 - 1004
    assert value(found, "pubsub_cache_account_lag_events", account=JULIET) == 1
    assert value(found, "pubsub_cache_account_lag_seconds", account=JULIET) == 2000 - 1003
    # Recorded by no daemon: no time it entered its state.
    assert value(found, "pubsub_cache_account_state", account=JULIET, state="unknown") == 1
    assert found["pubsub_cache_account_state_since"] == []
