"""``pubsub-cache bench accounts``: many accounts in one daemon process (issue 13, point 8).

On a throwaway Prosody, for each database and each account count (1, 200 and 1,000; with
``--quick`` 1 and 50), a child process runs the daemon (:mod:`.pool_process`: every account's
ingest and the projector, as ``pubsub-cache run`` with an accounts file) and says how long
every account took to connect and how much its RSS grew. Then up to 200 of the accounts
subscribe to one public node of the pubsub component (a sync each) and this process publishes
items to it, one at a time: each publication is one notification per subscriber. The
latency of each subscriber runs from sending the publish to the item showing in that
subscriber's view, seen by polling ``pubsub_item`` every 2 ms from this process's own
connection (the first poll whose snapshot holds the row stops the clock). CPU per
notification is the child's CPU time over the publications divided by the notifications;
"with reconciliation" runs on until no subscriber has a check of the node due (the probe a
publication triggers, a second later by default).

The bench checks its result (every account connected, every subscriber's view holds every
published item with its payload) and prints, last, ``ratio=`` the fan-out p99 over a single
account's p99 on the same server and database, per backend. The target, 10, is what the
daemon's batching must earn: the fan-out does 200 times the work of one notification (200
stanzas parsed, 200 events appended and projected), so 10 means its last view lags no more
than 20 single notifications' worth.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar
from xml.etree.ElementTree import canonicalize

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node
from pubsub_cache.xmpp.client import session
from pubsub_cache.xmpp.pubsub import PubsubClient

from . import pool_process
from .payloads import atom_entry
from .pool_process import Connected, Usage
from .report import BenchFailure, print_ratio, print_table

PASSWORD = "bench-secret"
PUBLISHER = "publisher"
TARGET = 10.0
#: Subscribers of the fan-out (the issue's figure); fewer when fewer accounts run.
FAN_OUT = 200
FULL = (1, 200, 1000)
QUICK = (1, 50)
POLL = 0.002
MB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Figures:
    """One run: ``accounts`` connected in one process, ``subscribers`` of them fanned out to."""

    backend: str
    accounts: int
    subscribers: int
    connect_seconds: float
    rss_per_account: float
    latencies: list[float]
    cpu_notify: float
    cpu_reconcile: float

    @property
    def notifications(self) -> int:
        return len(self.latencies)

    def percentile(self, cut: int) -> float:
        """The ``cut``-th percentile latency, in seconds."""
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[cut - 1]


def run(*, quick: bool, postgres_url: str | None) -> list[Figures]:
    """Every run on SQLite (and PostgreSQL); prints the table and ratio lines; returns the
    figures. Raises :class:`BenchFailure` when a run's result is wrong."""
    counts = QUICK if quick else FULL
    with (
        tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder,
        LocalProsody(admins=[PUBLISHER], workdir=Path(folder) / "xmpp") as xmpp,
    ):
        started = time.perf_counter()
        users = [f"bench{n:05d}" for n in range(max(counts))]
        xmpp.register_many([PUBLISHER, *users], PASSWORD)
        print(f"registered {len(users) + 1} accounts in {time.perf_counter() - started:.2f} s")
        figures = anyio.run(_all, xmpp, users, counts, Path(folder), postgres_url)
    _report(figures)
    return figures


async def _all(
    xmpp: LocalProsody, users: list[str], counts: tuple[int, ...], folder: Path, pg: str | None
) -> list[Figures]:
    figures: list[Figures] = []
    jid = f"{xmpp.jid(PUBLISHER)}/bench"
    async with session(jid, PASSWORD, host=xmpp.host, port=xmpp.port, tls="none") as publisher:
        for backend in ("sqlite", "postgresql") if pg else ("sqlite",):
            for count in counts:
                with _database(backend, folder, pg) as url:
                    run = _Run(
                        xmpp, publisher, backend, url, users[:count], quick=max(counts) < 200
                    )
                    figures.append(await run.measure())
    return figures


@contextmanager
def _database(backend: str, folder: Path, postgres_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(folder / f"cache-{uuid.uuid4().hex[:8]}.sqlite3")
        return
    assert postgres_url is not None
    with scratch_postgres(postgres_url, prefix="bench") as url:
        yield url


class _Run:
    """One child daemon serving ``users``; see the module docstring."""

    def __init__(
        self,
        xmpp: LocalProsody,
        publisher: PubsubClient,
        backend: str,
        url: str,
        users: list[str],
        *,
        quick: bool,
    ) -> None:
        self.xmpp, self.publisher, self.backend, self.url = xmpp, publisher, backend, url
        self.users = users
        self.subscribers = users[:FAN_OUT]
        single = len(users) == 1
        self.publishes = (10 if quick else 20) if single else (3 if quick else 5)
        self.node = f"fan-out-{uuid.uuid4().hex[:8]}"

    async def measure(self) -> Figures:
        engine = create_engine(self.url)
        ensure_schema(engine)
        context = multiprocessing.get_context("spawn")
        pipe, child_end = context.Pipe()
        accounts = [(self.xmpp.jid(user), PASSWORD) for user in self.users]
        timeout = 30.0 + len(accounts) * 0.5
        args = (child_end, self.url, accounts, self.xmpp.host, self.xmpp.port, timeout)
        child = context.Process(target=pool_process.serve, args=args, daemon=True)
        child.start()
        try:
            connected = await _receive(pipe, timeout + 30.0, Connected)
            if connected.failed or connected.connected != len(accounts):
                shown = dict(list(connected.failed.items())[:3])
                raise BenchFailure(
                    f"{connected.connected} of {len(accounts)} accounts connected on "
                    f"{self.backend}; not connected: {shown}"
                )
            return await self._fan_out(engine, pipe, connected)
        finally:
            if child.is_alive():
                pipe.send("stop")
                await anyio.to_thread.run_sync(child.join, 30.0)
            if child.is_alive():
                child.kill()
            engine.dispose()

    async def _fan_out(self, engine: Engine, pipe: Connection, connected: Connected) -> Figures:
        service = self.xmpp.pubsub_service
        jids = {self.xmpp.jid(user) for user in self.subscribers}
        await self.publisher.create_node(service, self.node)
        now = datetime.now(UTC)
        requests = [
            SyncRequested(account=jid, service=service, node=self.node, observed_at=now)
            for jid in sorted(jids)
        ]
        await anyio.to_thread.run_sync(EventLog(engine).append, requests)
        await _until(lambda: _synced(engine, service, self.node) >= len(jids), 60.0 + len(jids))
        before = await _ask(pipe)
        latencies: list[float] = []
        payloads: dict[str, str] = {}
        for number in range(self.publishes):
            item_id, payload = f"item-{number}", atom_entry(number)
            payloads[item_id] = payload
            seen: dict[str, float] = {}
            async with anyio.create_task_group() as group:
                sent = time.time()
                group.start_soon(
                    anyio.to_thread.run_sync, _watch, engine, self.node, item_id, jids, seen
                )
                await self.publisher.publish(service, self.node, item_id, payload)
            if set(seen) != jids:
                raise BenchFailure(
                    f"{self.backend}: item {item_id} reached {len(seen)} of {len(jids)} views"
                )
            latencies.extend(when - sent for when in seen.values())
        published = await _ask(pipe)
        checked = published  # every notification was handled: its check is due or done
        with anyio.fail_after(60):
            while checked.pending:
                await anyio.sleep(0.05)
                checked = await _ask(pipe)
        _check_views(engine, self.node, jids, payloads, self.backend)
        count = len(latencies)
        return Figures(
            backend=self.backend,
            accounts=len(self.users),
            subscribers=len(jids),
            connect_seconds=connected.seconds,
            rss_per_account=(connected.rss_after - connected.rss_before) / len(self.users),
            latencies=latencies,
            cpu_notify=(published.cpu - before.cpu) / count,
            cpu_reconcile=(checked.cpu - before.cpu) / count,
        )


async def _receive(pipe: Connection, timeout: float, kind: type[T]) -> T:
    ready = await anyio.to_thread.run_sync(pipe.poll, timeout)
    if not ready:
        raise BenchFailure(f"the daemon process said nothing within {timeout:g} s")
    message = pipe.recv()
    if not isinstance(message, kind):
        raise BenchFailure(f"the daemon process answered {message!r}")
    return message


async def _ask(pipe: Connection) -> Usage:
    pipe.send("usage")
    return await _receive(pipe, 30.0, Usage)


async def _until(check: object, timeout: float) -> None:
    assert callable(check)
    with anyio.fail_after(timeout):
        while not await anyio.to_thread.run_sync(check):
            await anyio.sleep(0.05)


def _synced(engine: Engine, service: str, node: str) -> int:
    query = sa.select(sa.func.count()).where(
        pubsub_node.c.service == service,
        pubsub_node.c.node == node,
        pubsub_node.c.sync_state == "COMPLETED",
        pubsub_node.c.subscribed.is_(True),
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _watch(engine: Engine, node: str, item_id: str, jids: set[str], seen: dict[str, float]) -> None:
    """Record when each of ``jids`` first has ``item_id`` in its view: the start of the first
    poll that finds it (its snapshot is taken then, so the row was committed before)."""
    query = (
        sa.select(pubsub_node.c.account)
        .select_from(pubsub_item.join(pubsub_node))
        .where(pubsub_node.c.node == node, pubsub_item.c.item_id == item_id)
    )
    deadline = time.monotonic() + 60.0
    with engine.connect() as connection:
        while len(seen) < len(jids) and time.monotonic() < deadline:
            polled = time.time()
            for account in connection.execute(query).scalars():
                seen.setdefault(account, polled)
            connection.rollback()  # a fresh snapshot for the next poll
            time.sleep(POLL)


def _check_views(
    engine: Engine, node: str, jids: set[str], payloads: dict[str, str], backend: str
) -> None:
    query = (
        sa.select(pubsub_node.c.account, pubsub_item.c.item_id, pubsub_content.c.payload)
        .select_from(
            pubsub_item.join(pubsub_node).outerjoin(
                pubsub_content, pubsub_content.c.id == pubsub_item.c.content_id
            )
        )
        .where(pubsub_node.c.node == node)
    )
    with engine.connect() as connection:
        held = {(row[0], row[1]): row[2] for row in connection.execute(query)}
    # Canonical XML: the server may reorder attributes, which changes nothing.
    expected = {(jid, item): canonicalize(xml) for jid in jids for item, xml in payloads.items()}
    wrong = [
        key for key, xml in expected.items() if canonicalize(held.get(key) or "<none/>") != xml
    ]
    if wrong:
        raise BenchFailure(
            f"{backend}: {len(wrong)} views lack an item or its payload: {wrong[:3]}"
        )


def _report(figures: list[Figures]) -> None:
    rows = [
        [
            f.backend,
            f.accounts,
            f"{f.connect_seconds:.2f}",
            f"{f.rss_per_account / MB:.2f}",
            f.subscribers,
            f.notifications,
            f"{f.percentile(50) * 1000:.1f}",
            f"{f.percentile(99) * 1000:.1f}",
            f"{f.cpu_notify * 1000:.2f}",
            f"{f.cpu_reconcile * 1000:.2f}",
        ]
        for f in figures
    ]
    headers = ["database", "accounts", "connect s", "RSS MB/acct", "subscribers"]
    headers += ["notifications", "p50 ms", "p99 ms", "CPU ms/notif", "+reconcile ms/notif"]
    print_table(headers, rows)
    print()
    print("RSS per account: (RSS with all connected - RSS of the daemon on no account) / accounts;")
    print("target 2 MB. Latency: publish sent -> item in each subscriber's view (2 ms polls).")
    for backend in dict.fromkeys(f.backend for f in figures):
        runs = [f for f in figures if f.backend == backend]
        single = next(f for f in runs if f.accounts == 1)
        fan_out = max(
            (f for f in runs if f.accounts > 1), key=lambda f: (f.subscribers, -f.accounts)
        )
        print_ratio(fan_out.percentile(99) / single.percentile(99), TARGET, backend)
