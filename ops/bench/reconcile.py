"""``pubsub-cache bench reconcile``: what a reconciliation of a large node costs beside the
full re-read it replaces, on a local Prosody and a local ejabberd, on each database backend.

On each server a publisher fills one node with N XEP-0277 Atom entries (N = 10,000; 2,000
with ``--quick``; 32 publishes in flight). The cache account syncs it once through
``sync_node`` into an :class:`EventWriter` on a scratch database and the projector catches up:
the read model holds the node COMPLETED with N items. Then, several times each:

- **full re-fetch**: ``sync_node`` again (every item with its payload), writer flush,
  projector catch-up (it hashes each payload to find nothing changed);
- **reconcile, unchanged**: ``Reconciler.check(client, ref, "periodic")`` (disco#items on the
  node: ids without payloads, compared with the read model), writer flush, projector
  catch-up; it must log nothing (the log head must not move);
- **reconcile, 10 evicted**: the publisher retracts 10 items without notification first; the
  check must log exactly one ``ItemsListed`` and the projector remove exactly those 10;
- **after a publish (probe)**: ``Reconciler.check(client, ref, "publish")``, the check run after
  every publication burst on a node of unknown limit: it asks for the few oldest cached items
  (a server evicts the oldest first) and lists the node only when one is gone; unchanged, it
  must log nothing and be settled by the probe.

Times are wall seconds per repetition (median, p95); ``KiB in`` is what the cache account's
session received during it (bytes read from its socket). The evicted items are published again
(under new ids) after each backend, so every backend sees an N-item node.

Printed per server and backend: full re-fetch / unchanged listing, and full re-fetch / probe.
``ratio`` = full re-fetch median / the check after a publication (the probe: the frequent one;
the listing runs for it only when something is gone, and periodically), on the server where it
is lowest (the worst case), one line per backend, last; target 5. Any wrong count or log
movement exits with status 1. (Don't choose N = 1000, the sync's page size: Prosody's whole-node
reply of exactly that many items may be capped, so the sync is rightly PARTIAL and the bench
fails.)

Seen here at N = 10,000 (2 cores): Prosody 0.12 answers disco#items in ~3.8 s, nearly all of
it in the server, and its cost grows with the payloads (~1.2 s for tiny items): the ratio
there is ~1.6, bounded by Prosody, not by the client (~0.3 s: slixmpp builds a stanza object
per listed item) or the read-model comparison (tens of ms). ejabberd lists in ~0.6 s, while
``sync_node``'s 100-item RSM pages cost it ~40 s: ratio ~40-70.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import ItemsListed
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import atom_entry
from pubsub_cache.ops.bench.report import print_table
from pubsub_cache.ops.dev.xmpp_server import LocalXmppServer
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.xmpp.client import PubsubClient, session
from pubsub_cache.xmpp.directory import NodeRef, ReadModelDirectory
from pubsub_cache.xmpp.reconcile import Reconciler
from pubsub_cache.xmpp.sync import sync_node, utc_now
from pubsub_cache.xmpp.writer import EventWriter

WINDOW = 32  # publish requests in flight while filling a node
EVICTED = 10  # items retracted at the server before each "evicted" reconciliation
PASSWORD = "bench-secret"
TARGET = 5.0

FULL, UNCHANGED, EVICT = "full re-fetch", "reconcile, unchanged", "reconcile, 10 evicted"
PROBE = "after a publish (probe)"


class BenchFailure(Exception):
    """A check of the benchmark's own results failed: the figures are not to be trusted."""


@dataclass(frozen=True)
class Plan:
    """How much to do: items in the node, repetitions of each case."""

    items: int
    full_runs: int
    check_runs: int
    evict_runs: int


QUICK = Plan(items=2_000, full_runs=3, check_runs=5, evict_runs=2)
DEFAULT = Plan(items=10_000, full_runs=5, check_runs=10, evict_runs=3)


@dataclass
class Case:
    """Repetitions of one case on one server and backend."""

    server: str
    backend: str
    name: str
    seconds: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def row(self, items: int) -> list[object]:
        kib = statistics.median(self.received) / 1024
        return [
            self.server,
            self.backend,
            items,
            self.name,
            len(self.seconds),
            f"{self.median * 1000:.0f}",
            f"{self.p95() * 1000:.0f}",
            f"{kib:,.1f}",
        ]


def run(*, quick: bool, items: int | None, repeat: int | None, postgres_url: str | None) -> None:
    """Measure on both servers and every backend; print the table, then the ratio lines.

    Raises :class:`BenchFailure` when a result is wrong (the CLI exits with status 1).
    """
    from pubsub_cache.ops.dev.ejabberd import LocalEjabberd
    from pubsub_cache.ops.dev.prosody import LocalProsody

    plan = QUICK if quick else DEFAULT
    if items is not None:
        plan = Plan(items, plan.full_runs, plan.check_runs, plan.evict_runs)
    if repeat is not None:
        plan = Plan(plan.items, repeat, repeat, repeat)
    if plan.items <= EVICTED * plan.evict_runs:
        raise BenchFailure(f"{plan.items} items cannot lose {EVICTED} per eviction run")
    limit = max(10_000, plan.items)
    cases: list[Case] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pubsub-cache-")))
        servers: list[LocalXmppServer] = [
            stack.enter_context(LocalProsody(admins=["publisher"], max_items=limit)),
            stack.enter_context(LocalEjabberd(admins=["publisher"], max_items=limit)),
        ]
        for server in servers:
            for user in ("publisher", "cache"):
                server.register(user, PASSWORD)
        for server in servers:
            backends = [("sqlite", sqlite_url(folder / f"{server.software}.sqlite3"))]
            if postgres_url:
                url = stack.enter_context(scratch_postgres(postgres_url, prefix="bench"))
                backends.append(("postgresql", url))
            cases += anyio.run(_on_server, server, backends, plan, backend="asyncio")
    print_table(
        ["server", "backend", "items", "case", "runs", "median ms", "p95 ms", "KiB in"],
        [case.row(plan.items) for case in cases],
    )
    _print_ratios(cases)


def _print_ratios(cases: list[Case]) -> None:
    found = {(case.server, case.backend, case.name): case for case in cases}
    backends = list(dict.fromkeys(case.backend for case in cases))
    servers = list(dict.fromkeys(case.server for case in cases))
    final: list[str] = []
    print()
    for backend in backends:
        ratios = {
            server: found[server, backend, FULL].median / found[server, backend, PROBE].median
            for server in servers
        }
        for server, ratio in ratios.items():
            full = found[server, backend, FULL].median
            print(
                f"{server} {backend}: full/probe={ratio:.1f} "
                f"full/listing={full / found[server, backend, UNCHANGED].median:.1f} "
                f"full/evicted={full / found[server, backend, EVICT].median:.1f}"
            )
        worst = min(ratios, key=lambda server: ratios[server])
        print(f"{backend}: ratio taken on {worst} (the lower of the servers)")
        final.append(f"ratio={ratios[worst]:.1f} target={TARGET:g} backend={backend}")
    for line in final:
        print(line)


async def _on_server(
    server: LocalXmppServer, backends: list[tuple[str, str]], plan: Plan
) -> list[Case]:
    service, node = server.pubsub_service, f"bench-reconcile-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"host": server.host, "port": server.port, "tls": "none"}
    cases: list[Case] = []
    async with (
        session(server.jid("publisher"), PASSWORD, **options) as publisher,
        session(server.jid("cache"), PASSWORD, request_timeout=120, **options) as cache,
    ):
        await publisher.create_node(service, node, {"max_items": max(10_000, plan.items)})
        started = time.perf_counter()
        await _publish(publisher, service, node, [(f"post-{n}", n) for n in range(plan.items)])
        print(
            f"{server.software}: {plan.items} items published in "
            f"{time.perf_counter() - started:.1f} s"
        )
        received = _count_received(cache)
        for backend, url in backends:
            engine = create_engine(url)
            try:
                ensure_schema(engine)
                bench = _Bench(server.software, backend, engine, cache, publisher, received)
                cases += await bench.measure(NodeRef(service, node), plan)
            finally:
                engine.dispose()
    return cases


async def _publish(
    client: PubsubClient, service: str, node: str, items: list[tuple[str, int]]
) -> None:
    """Publish ``(item id, entry number)`` pairs, ``WINDOW`` requests in flight."""
    pending = iter(items)

    async def publisher() -> None:
        for item_id, number in pending:
            await client.publish(service, node, item_id, atom_entry(number))

    async with anyio.create_task_group() as group:
        for _ in range(WINDOW):
            group.start_soon(publisher)


class _Received:
    """Bytes read from one session's socket (wrapping its protocol's ``data_received``)."""

    def __init__(self) -> None:
        self.count = 0

    def since(self, start: int) -> int:
        return self.count - start


def _count_received(client: PubsubClient) -> _Received:
    counter = _Received()
    xmpp = client.xmpp
    original: Callable[[bytes | str], None] = xmpp.data_received

    def counting(data: bytes | str) -> None:
        counter.count += len(data)
        original(data)

    # asyncio's transport looks data_received up on the protocol for every read.
    setattr(xmpp, "data_received", counting)  # noqa: B010 (mypy refuses a method assignment)
    return counter


@dataclass
class _Bench:
    server: str
    backend: str
    engine: Engine
    cache: PubsubClient
    publisher: PubsubClient
    received: _Received

    async def measure(self, ref: NodeRef, plan: Plan) -> list[Case]:
        log = EventLog(self.engine)
        writer = EventWriter(log)
        projector = Projector(self.engine, registry=default_registry())
        requested: list[str] = []
        reconciler = Reconciler(
            self.cache.jid,
            writer,
            ReadModelDirectory(self.engine, default_registry()),
            utc_now,
            lambda _ref, reason: requested.append(reason),
            lambda _ref: False,
        )
        try:
            await self._sync(writer, projector, ref, plan.items)  # the read model holds it all
            full, unchanged, evict, probe = (
                Case(self.server, self.backend, name) for name in (FULL, UNCHANGED, EVICT, PROBE)
            )
            for _ in range(plan.full_runs):
                with self._timed(full):
                    await self._sync(writer, projector, ref, plan.items)
            for _ in range(plan.check_runs):
                head = log.head()
                with self._timed(unchanged):
                    logged = await reconciler.check(self.cache, ref, "periodic")
                    await writer.flush()
                    await anyio.to_thread.run_sync(projector.catch_up)
                if logged or log.head() != head:
                    raise BenchFailure(
                        f"{self.server} {self.backend}: a reconciliation of an unchanged node "
                        f"logged something (log head {head} -> {log.head()})"
                    )
            evicted: list[str] = []
            expected = plan.items
            for _ in range(plan.evict_runs):
                victims = _victims(await anyio.to_thread.run_sync(self._item_ids, ref))
                for item_id in victims:
                    await self.publisher.retract(ref.service, ref.node, item_id, notify=False)
                evicted += victims
                expected -= len(victims)
                await anyio.sleep(0.2)  # let anything the retracts caused arrive first
                head = log.head()
                with self._timed(evict):
                    logged = await reconciler.check(self.cache, ref, "periodic")
                    await writer.flush()
                    await anyio.to_thread.run_sync(projector.catch_up)
                await anyio.to_thread.run_sync(self._check_eviction, log, head, ref, expected)
                ids = await anyio.to_thread.run_sync(self._item_ids, ref)
                if not logged or ids & set(victims) or len(ids) != expected:
                    raise BenchFailure(
                        f"{self.server} {self.backend}: after evicting {victims} the read model "
                        f"holds {len(ids)} items, expected {expected} without them"
                    )
            for _ in range(plan.check_runs):
                head, settled = log.head(), reconciler.stats.probes
                with self._timed(probe):
                    logged = await reconciler.check(self.cache, ref, "publish")
                    await writer.flush()
                    await anyio.to_thread.run_sync(projector.catch_up)
                if logged or log.head() != head or reconciler.stats.probes != settled + 1:
                    raise BenchFailure(
                        f"{self.server} {self.backend}: the probe of an unchanged node did not "
                        f"settle it (log head {head} -> {log.head()})"
                    )
            if requested:
                raise BenchFailure(f"{self.server} {self.backend}: syncs requested: {requested}")
            # New ids in place of the evicted ones: the next backend syncs an N-item node.
            restored = [(f"restored-{self.backend}-{n}", n) for n in range(len(evicted))]
            await _publish(self.publisher, ref.service, ref.node, restored)
            return [full, unchanged, evict, probe]
        finally:
            projector.release()
            log.close()

    async def _sync(
        self, writer: EventWriter, projector: Projector, ref: NodeRef, items: int
    ) -> None:
        result = await sync_node(self.cache, writer, ref.service, ref.node)
        await writer.flush()
        await anyio.to_thread.run_sync(projector.catch_up)
        if result.state != "COMPLETED" or result.item_count != items:
            raise BenchFailure(
                f"{self.server} {self.backend}: sync ended {result.state} with "
                f"{result.item_count} items ({result.reason}), expected {items}"
            )
        state, count = await anyio.to_thread.run_sync(self._node_state, ref)
        if state != "COMPLETED" or count != items:
            raise BenchFailure(
                f"{self.server} {self.backend}: the read model holds the node {state} with "
                f"{count} items, expected COMPLETED with {items}"
            )

    @contextlib.contextmanager
    def _timed(self, case: Case) -> Iterator[None]:
        before = self.received.count
        start = time.perf_counter()
        yield
        case.seconds.append(time.perf_counter() - start)
        case.received.append(self.received.since(before))

    def _check_eviction(self, log: EventLog, head: int, ref: NodeRef, expected: int) -> None:
        events = [record.event for record in log.read(after=head)]
        if (
            len(events) != 1
            or not isinstance(events[0], ItemsListed)
            or not events[0].complete
            or len(events[0].item_ids) != expected
        ):
            shown = [type(event).__name__ for event in events]
            raise BenchFailure(
                f"{self.server} {self.backend}: the reconciliation after an eviction logged "
                f"{shown}, expected one complete ItemsListed of {expected} ids"
            )

    def _node_state(self, ref: NodeRef) -> tuple[str | None, int]:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(pubsub_node.c.sync_state, pubsub_node.c.id).where(
                    pubsub_node.c.account == self.cache.jid,
                    pubsub_node.c.service == ref.service,
                    pubsub_node.c.node == ref.node,
                )
            ).first()
            if row is None:
                return None, 0
            count = connection.execute(
                sa.select(sa.func.count()).where(pubsub_item.c.node_id == row.id)
            ).scalar_one()
        return str(row.sync_state), int(count)

    def _item_ids(self, ref: NodeRef) -> set[str]:
        query = (
            sa.select(pubsub_item.c.item_id)
            .select_from(pubsub_item.join(pubsub_node))
            .where(
                pubsub_node.c.account == self.cache.jid,
                pubsub_node.c.service == ref.service,
                pubsub_node.c.node == ref.node,
            )
        )
        with self.engine.connect() as connection:
            return set(connection.execute(query).scalars())


def _victims(cached: set[str]) -> list[str]:
    """``EVICTED`` items of the first fill still in the node, spread over it."""
    posts = sorted(int(item_id[5:]) for item_id in cached if item_id.startswith("post-"))
    step = len(posts) // EVICTED
    return [f"post-{posts[k * step]}" for k in range(EVICTED)]
