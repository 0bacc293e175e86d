"""``pubsub-cache bench ingest``: how fast the daemon absorbs notifications, and how soon an item
published at the server is in the read model.

A local Prosody, the daemon (ingest + projector, in this process) on an SQLite file, and a
publisher on the same server. First, idle: items are published one at a time, and the clock
runs from sending the publish until the item is in ``pubsub_item``. Then a burst: N items
published as fast as the server takes them (a window of requests in flight); the server's rate
is N over the time to the last acknowledgement, ours N over the time to the last notification
appended to the log. ``ratio`` is ours over the server's: 1.0 means the ingest kept up. Burst
latencies run from sending each publish to its notification in the log.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.codec import decode
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.types import ItemsPublished
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import atom_entry
from pubsub_cache.ops.bench.report import print_table
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.xmpp.client import session
from pubsub_cache.xmpp.ingest import IngestOptions, XmppAccount

WINDOW = 32  # publish requests in flight during the burst
PASSWORD = "bench-secret"


@dataclass
class Figures:
    idle_to_log: list[float]
    idle_to_model: list[float]
    burst_to_log: list[float]
    burst_to_model: list[float]
    burst_count: int
    publish_seconds: float
    ingest_seconds: float


@click.command("ingest")
@click.option("--quick", is_flag=True, help="A smaller run that finishes within 60 s.")
def ingest(quick: bool) -> None:
    """Notifications absorbed per second and publish-to-read-model latency, on SQLite."""
    idle, burst = (50, 3_000) if quick else (200, 20_000)
    with (
        tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder,
        LocalProsody(
            admins=["publisher"], max_items=burst + idle, workdir=Path(folder) / "xmpp"
        ) as xmpp,
    ):
        for user in ("publisher", "cache"):
            xmpp.register(user, PASSWORD)
        engine = create_engine(sqlite_url(Path(folder) / "cache.sqlite3"))
        ensure_schema(engine)
        try:
            figures = anyio.run(_measure, xmpp, engine, idle, burst, backend="asyncio")
        finally:
            engine.dispose()
    _report(figures)


async def _measure(xmpp: LocalProsody, engine: Engine, idle: int, burst: int) -> Figures:
    from pubsub_cache.ops.cli_daemon import serve

    account = XmppAccount(
        jid=xmpp.jid("cache"), password=PASSWORD, host=xmpp.host, port=xmpp.port, tls="none"
    )
    service, node = xmpp.pubsub_service, f"bench-{uuid.uuid4().hex[:8]}"
    options = IngestOptions(keepalive=600)
    async with (
        session(xmpp.jid("publisher"), PASSWORD, host=xmpp.host, port=xmpp.port, tls="none") as pub,
        anyio.create_task_group() as group,
    ):
        await pub.create_node(service, node, {"max_items": burst + idle})
        daemon = await group.start(partial(serve, engine, account, signals=False, options=options))
        daemon.request_sync(service, node, "benchmark")
        await daemon.wait_idle()
        idle_to_log, idle_to_model = [], []
        for number in range(idle):
            sent = time.time()
            await pub.publish(service, node, f"idle-{number}", atom_entry(number))
            await _until_in_model(engine, node, f"idle-{number}")
            idle_to_model.append(time.time() - sent)
            idle_to_log.append(_recorded_at(engine, f"idle-{number}") - sent)
        # The burst comes from another process: sharing this one's CPU with the ingest would
        # slow the publisher down to the ingest's pace and flatter the ratio.
        in_model: dict[str, float] = {}
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            group.start_soon(_watch_model, engine, node, in_model)
            started = time.time()
            sent_at, last_ack = await anyio.to_thread.run_sync(
                pool.apply, _burst_process, (xmpp.host, xmpp.port, service, node, burst)
            )
            publish_seconds = last_ack - started
        with anyio.fail_after(120):
            while len(in_model) < idle + burst:
                await anyio.sleep(0.01)
        recorded = _burst_recorded(engine)
        group.cancel_scope.cancel()
    return Figures(
        idle_to_log=idle_to_log,
        idle_to_model=idle_to_model,
        burst_to_log=[recorded[item] - sent_at[item] for item in sent_at],
        burst_to_model=[in_model[item] - sent_at[item] for item in sent_at],
        burst_count=burst,
        publish_seconds=publish_seconds,
        ingest_seconds=max(recorded.values()) - started,
    )


def _burst_process(
    host: str, port: int, service: str, node: str, count: int
) -> tuple[dict[str, float], float]:
    """Publish ``count`` items, ``WINDOW`` in flight; when each was sent, and when the last was
    acknowledged (Unix time). Runs in a child process (see ``_measure``)."""

    async def burst() -> tuple[dict[str, float], float]:
        sent: dict[str, float] = {}
        last_ack = 0.0
        numbers = iter(range(count))
        jid = "publisher@localhost/burst"
        async with session(jid, PASSWORD, host=host, port=port, tls="none") as pub:

            async def publisher() -> None:
                nonlocal last_ack
                for number in numbers:
                    item_id = f"burst-{number}"
                    sent[item_id] = time.time()
                    await pub.publish(service, node, item_id, atom_entry(number))
                    last_ack = max(last_ack, time.time())

            async with anyio.create_task_group() as group:
                for _ in range(WINDOW):
                    group.start_soon(publisher)
        return sent, last_ack

    return anyio.run(burst, backend="asyncio")


async def _until_in_model(engine: Engine, node: str, item_id: str) -> None:
    query = (
        sa.select(sa.func.count())
        .select_from(pubsub_item.join(pubsub_node))
        .where(pubsub_node.c.node == node, pubsub_item.c.item_id == item_id)
    )
    with anyio.fail_after(10):
        while not await anyio.to_thread.run_sync(_scalar, engine, query):
            await anyio.sleep(0.001)


async def _watch_model(engine: Engine, node: str, seen: dict[str, float]) -> None:
    # When each item of the node first shows in the read model (to within the 5 ms polls).
    after = 0
    while True:
        query = (
            sa.select(pubsub_item.c.item_id, pubsub_item.c.created_position)
            .select_from(pubsub_item.join(pubsub_node))
            .where(pubsub_node.c.node == node, pubsub_item.c.created_position > after)
        )
        rows = await anyio.to_thread.run_sync(_rows, engine, query)
        now = time.time()
        for item_id, position in rows:
            seen.setdefault(item_id, now)
            after = max(after, position)
        await anyio.sleep(0.005)


def _rows(engine: Engine, query: sa.Executable) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        return [(row[0], row[1]) for row in connection.execute(query)]


def _scalar(engine: Engine, query: sa.Executable) -> int:
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _recorded_at(engine: Engine, item_id: str) -> float:
    return _notified(engine, "ORDER BY position DESC LIMIT 50")[item_id]


def _burst_recorded(engine: Engine) -> dict[str, float]:
    notified = _notified(engine, "")
    return {item: when for item, when in notified.items() if item.startswith("burst-")}


def _notified(engine: Engine, clause: str) -> dict[str, float]:
    # When each item's notification was appended to the log (the first one, for an item id).
    recorded: dict[str, float] = {}
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT position, recorded_at, body FROM event WHERE type = 'items-published' " + clause
        ).all()
    for position, recorded_at, body in sorted(rows):
        event = decode(body, position=position)
        if isinstance(event, ItemsPublished) and event.source == "notification":
            for item in event.items:
                recorded.setdefault(item.id, float(recorded_at))
    return recorded


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def _report(figures: Figures) -> None:
    rows = []
    for label, values in (
        ("idle: publish -> log", figures.idle_to_log),
        ("idle: publish -> read model", figures.idle_to_model),
        ("burst: publish -> log", figures.burst_to_log),
        ("burst: publish -> read model", figures.burst_to_model),
    ):
        p50, p95, p99 = _percentiles(values)
        rows.append([label, len(values), f"{p50:.1f}", f"{p95:.1f}", f"{p99:.1f}"])
    print_table(["latency", "items", "p50 ms", "p95 ms", "p99 ms"], rows)
    published = figures.burst_count / figures.publish_seconds
    absorbed = figures.burst_count / figures.ingest_seconds
    print()
    print(f"burst of {figures.burst_count} items: server sustained {published:,.0f} publishes/s")
    print(f"notifications absorbed: {absorbed:,.0f}/s (publish start to last one in the log)")
    print(f"ratio={absorbed / published:.2f} target=1.0")
