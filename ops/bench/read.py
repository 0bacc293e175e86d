"""``pubsub-cache bench read``: cached ``get_items`` of the 20 newest items of a 100k-item
XEP-0277 node, beside raw SQL for the same rows and a live read of a 20-item node from a local
Prosody, all in the same run; and a search on a parsed key without and with an index.

- **cached**: ``await Query.get_items(account, service, node, max_items=20)``, the async API
  (on SQLite it reads in the event loop's thread), giving 20 items with their RSM set;
  ``parsed`` is decoded on access, so a second line also reads every item's ``parsed``;
- **raw**: the best hand-written query for the same 20 rows on a plain ``sqlite3`` (or
  ``psycopg``) connection: the node's id by its key, then the newest items read down the index
  ``(node_id, service_rank, id)`` (projector/ranks.py) and ``fetchall()``; nothing decoded
  (on PostgreSQL ``parsed`` comes as text, as the product reads it, not decoded by the driver);
- **live**: the same ``get_items`` through the query library on a node the cache does not hold,
  read from Prosody over loopback by the client's session (fetch, parse, window);
- **search**: ``title eq <one title>`` through ``Query.search``, before and after
  ``CREATE INDEX`` on the expression the search uses.

The node is filled through the real projector (sync pages of 1,000 items). Calls of cached and
raw alternate in rounds; latencies are per call. Before timing, the results are checked: the
node holds every item filled, the cached page comes from the cache and the raw query gives its
20 ids. Prints p50/p95, ``live/cached`` (target >= 20, SQLite), and last one
``ratio=<cached p50 / raw p50> target=2 backend=B`` per database.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from pubsub_cache.events import Item, SyncCompleted, SyncPageFetched, SyncStarted
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.query import Filter, Query

from .payloads import MICROBLOG_NODE, atom_entry
from .report import BenchFailure, print_ratio, print_table

ACCOUNT = "romeo@montague.lit"
SERVICE = "juliet@capulet.lit"
PAGE = 1000
#: Cached reads may take this many times the raw query's time (DESIGN.md).
TARGET = 2.0
_RAW = (
    "SELECT i.item_id, i.publisher, c.payload, {parsed}, i.published_at, i.updated_at "
    "FROM pubsub_item AS i LEFT JOIN pubsub_content AS c ON c.id = i.content_id "
    "WHERE i.node_id = (SELECT id FROM pubsub_node WHERE account = {p} AND service = {p} "
    "AND node = {p}) ORDER BY i.service_rank DESC, i.id DESC LIMIT 20"
)
_COUNT = (
    "SELECT count(*) FROM pubsub_item WHERE node_id = (SELECT id FROM pubsub_node "
    "WHERE account = {p} AND service = {p} AND node = {p})"
)

#: Builds, once the node is filled, the raw read and the node's item count read raw.
RawFactory = Callable[[], tuple[Callable[[], list[Any]], int]]


@dataclass(frozen=True)
class Plan:
    """How much to do: node size (on SQLite, on PostgreSQL), calls per side, live reads,
    unindexed searches."""

    items: int
    postgres_items: int
    calls: int
    live_calls: int
    searches: int


# Filling PostgreSQL through the projector runs at ~1,200 items/s here: --quick stays within
# 60 s with a smaller node there.
QUICK = Plan(items=100_000, postgres_items=5_000, calls=2_000, live_calls=100, searches=3)
FULL = Plan(items=100_000, postgres_items=100_000, calls=10_000, live_calls=400, searches=20)


@dataclass
class Latencies:
    """Per-call seconds of one measured case."""

    name: str
    seconds: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    def row(self, database: str) -> list[object]:
        return [database, self.name, len(self.seconds), self.p50 * 1e6, self.quantile(0.95) * 1e6]


def run(*, quick: bool, postgres_url: str | None) -> dict[str, float]:
    """Measure; print the table and the ratios; return cached p50 / raw p50 by backend."""
    plan = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        path = Path(folder) / "read.sqlite3"
        results = anyio.run(_measure, sqlite_url(path), plan, True, _sqlite_raw(path))
        postgres: dict[str, Latencies] = {}
        if postgres_url:
            with scratch_postgres(postgres_url, prefix="bench") as url:
                postgres = anyio.run(_measure, url, plan, False, _postgres_raw(url))
    rows = [case.row(f"sqlite {plan.items // 1000}k") for case in results.values()]
    rows += [case.row(f"postgresql {plan.postgres_items // 1000}k") for case in postgres.values()]
    print_table(["database, items", "case", "calls", "p50 us", "p95 us"], rows)
    searched = results["search, no index"].p50 / results["search, indexed"].p50
    print(f"search unindexed/indexed={searched:.0f}")
    print(f"live/cached={results['live'].p50 / results['cached'].p50:.1f} target=20 (sqlite)")
    ratios = {"sqlite": results["cached"].p50 / results["raw"].p50}
    if postgres:
        ratios["postgresql"] = postgres["cached"].p50 / postgres["raw"].p50
    for backend, ratio in ratios.items():
        print_ratio(ratio, TARGET, backend)
    return ratios


async def _measure(
    url: str, plan: Plan, live: bool, raw_factory: RawFactory
) -> dict[str, Latencies]:
    engine = create_engine(url)
    ensure_schema(engine)
    count = plan.items if live else plan.postgres_items
    await anyio.to_thread.run_sync(_fill, engine, count)
    raw, stored = raw_factory()
    results: dict[str, Latencies] = {}
    async with Query.open(engine) as query:
        newest = await query.get_items(ACCOUNT, SERVICE, MICROBLOG_NODE, max_items=20)
        _check(count, stored, [row[0] for row in reversed(raw())], newest)

        async def cached() -> None:
            await query.get_items(ACCOUNT, SERVICE, MICROBLOG_NODE, max_items=20)

        async def cached_parsed() -> None:
            page = await query.get_items(ACCOUNT, SERVICE, MICROBLOG_NODE, max_items=20)
            for item in page.items:
                _ = item.parsed

        async def raw_call() -> None:
            raw()

        sides = {"cached": cached, "raw": raw_call, "cached + every parsed": cached_parsed}
        results.update(await _alternate(sides, plan.calls))
        title = newest.items[0].parsed["title"]
        results.update(await _search_cases(query, engine, title, plan.searches))
    if live:
        results["live"] = await _live(engine, plan.live_calls)
    engine.dispose()
    return results


def _check(count: int, stored: int, raw_ids: list[str], newest: Any) -> None:
    """A fast wrong answer fails: the node holds every item, both sides the same 20 items."""
    if stored != count:
        raise BenchFailure(f"the node holds {stored} items, {count} were filled")
    cached_ids = [item.id for item in newest.items]
    if len(raw_ids) != 20 or raw_ids != cached_ids:
        raise BenchFailure(
            f"the raw query ({len(raw_ids)} items) and get_items ({len(cached_ids)}) "
            "disagree on the 20 newest items"
        )
    if not newest.from_cache:
        raise BenchFailure("get_items did not answer from the cache")


def _fill(engine: Any, count: int) -> None:
    """A COMPLETED node of ``count`` items, through the log and the projector."""
    log = EventLog(engine)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    common: dict[str, Any] = {
        "account": ACCOUNT,
        "service": SERVICE,
        "node": MICROBLOG_NODE,
        "sync_id": "bench",
    }
    log.append([SyncStarted(observed_at=now, **common)])
    for start in range(0, count, PAGE):
        items = [
            Item(id=f"post-{n}", publisher=SERVICE, payload=atom_entry(n))
            for n in range(start, min(count, start + PAGE))
        ]
        log.append([SyncPageFetched(observed_at=now, items=items, page=start // PAGE, **common)])
    log.append([SyncCompleted(observed_at=now, complete=True, item_count=count, **common)])
    Projector(engine, registry=default_registry(), batch_size=20).catch_up()
    log.close()


async def _alternate(
    sides: Mapping[str, Callable[[], Awaitable[None]]], calls: int, rounds: int = 10
) -> dict[str, Latencies]:
    results = {name: Latencies(name, []) for name in sides}
    for call in sides.values():  # warm caches and compiled statements
        for _ in range(50):
            await call()
    per_round = max(1, calls // rounds)
    order = list(sides.items())
    for number in range(rounds):
        for name, call in order if number % 2 == 0 else reversed(order):
            seconds = results[name].seconds
            for _ in range(per_round):
                start = time.perf_counter()
                await call()
                seconds.append(time.perf_counter() - start)
    return results


async def _search_cases(
    query: Query, engine: Any, title: str, searches: int
) -> dict[str, Latencies]:
    wanted = [Filter("title", "eq", title)]

    async def once() -> None:
        found = await query.search(ACCOUNT, filters=wanted, limit=20)
        if found.total != 1:
            raise AssertionError(f"the search for {title!r} found {found.total} items")

    plain = Latencies("search, no index", [])
    for _ in range(searches):
        start = time.perf_counter()
        await once()
        plain.seconds.append(time.perf_counter() - start)
    expression = (
        "json_extract(parsed, '$.title')"
        if engine.dialect.name == "sqlite"
        else "(parsed #> '{title}')"
    )
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE INDEX ix_bench_title ON pubsub_content ({expression})")
        connection.exec_driver_sql("ANALYZE")
    indexed = Latencies("search, indexed", [])
    for _ in range(50):
        await once()
    for _ in range(searches * 20):
        start = time.perf_counter()
        await once()
        indexed.seconds.append(time.perf_counter() - start)
    return {plain.name: plain, indexed.name: indexed}


async def _live(engine: Any, calls: int) -> Latencies:
    """get_items of a 20-item node the cache does not hold, read from a local Prosody."""
    from pubsub_cache.ops.dev.prosody import LocalProsody
    from pubsub_cache.xmpp.client import session

    node = "bench-live-20"
    with LocalProsody(admins=["publisher"]) as server:
        for user in ("publisher", "reader"):
            server.register(user, f"{user}-bench")
        options: dict[str, Any] = {"host": server.host, "port": server.port, "tls": "none"}
        service = server.pubsub_service
        async with (
            session(f"{server.jid('publisher')}/bench", "publisher-bench", **options) as writer,
            session(f"{server.jid('reader')}/bench", "reader-bench", **options) as reader,
        ):
            await writer.create_node(service, node)
            for n in range(20):
                await writer.publish(service, node, f"post-{n}", atom_entry(n))
            async with Query.open(engine, client=reader) as query:

                async def read() -> None:
                    page = await query.get_items(reader.jid, service, node, max_items=20)
                    if page.from_cache or len(page.items) != 20:
                        raise AssertionError("the live read did not return the 20 items live")

                return (await _alternate({"live": read}, calls, rounds=1))["live"]


def _sqlite_raw(path: Path) -> RawFactory:
    def factory() -> tuple[Callable[[], list[Any]], int]:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        statement = _RAW.format(p="?", parsed="c.parsed")
        key = (ACCOUNT, SERVICE, MICROBLOG_NODE)
        (count,) = connection.execute(_COUNT.format(p="?"), key).fetchone()
        return (lambda: connection.execute(statement, key).fetchall()), count

    return factory


def _postgres_raw(url: str) -> RawFactory:
    def factory() -> tuple[Callable[[], list[Any]], int]:
        import psycopg
        from sqlalchemy.engine import make_url

        target = make_url(url).set(drivername="postgresql").render_as_string(False)
        connection = psycopg.connect(target, autocommit=True)
        statement = _RAW.format(p="%s", parsed="c.parsed::text")
        key = (ACCOUNT, SERVICE, MICROBLOG_NODE)
        found = connection.execute(_COUNT.format(p="%s"), key).fetchone()
        count = found[0] if found else 0
        return (lambda: connection.execute(statement, key).fetchall()), count

    return factory
