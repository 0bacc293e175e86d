"""``pubsub-cache bench project``: the projector's rate on XEP-0277 items beside a raw baseline.

Ours: N ItemsPublished events (one ~800-byte Atom entry each) are already in the log; the clock
runs while the projector reads, decodes, parses, upserts and checkpoints them in batches.
Raw, in the same run and database: the same payloads parsed by the same parser, and the same
rows upserted into ``pubsub_item`` with the driver's ``executemany`` of one hand-written
``INSERT ... ON CONFLICT`` per batch. Rounds alternate, the best of each side is kept.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import atom_entry, publish_events
from pubsub_cache.ops.bench.report import best_rate, print_table
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parsers import MicroblogParser
from pubsub_cache.projector.payloads import payload_hash
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.xmlsafe import parse_payload

BATCH = 500
_COLUMNS = (
    "node_id, item_id, publisher, payload, parsed, parser, parser_version, text, payload_hash, "
    "published_at, created_at, updated_at, created_position, updated_position"
)
_UPSERT = (
    f"INSERT INTO pubsub_item ({_COLUMNS}) VALUES ({', '.join(['{p}'] * 14)}) "
    "ON CONFLICT (node_id, item_id) DO UPDATE SET payload = excluded.payload, "
    "parsed = excluded.parsed, text = excluded.text, payload_hash = excluded.payload_hash, "
    "updated_at = excluded.updated_at, updated_position = excluded.updated_position"
)


def run(*, quick: bool, postgres_url: str | None, rounds: int = 3) -> float:
    """Measure on SQLite (and PostgreSQL); print the table; return the SQLite ratio."""
    count = 4_000 if quick else 20_000
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        ours, raw = _measure(sqlite_url(Path(folder) / "project.sqlite3"), count, rounds)
        rows.append(["sqlite", count, ours, raw, ours / raw])
        ratio = ours / raw
    if postgres_url:
        with scratch_postgres(postgres_url, prefix="bench") as url:
            ours, raw = _measure(url, count, rounds)
        rows.append(["postgresql", count, ours, raw, ours / raw])
    print_table(["database", "items", "ours items/s", "raw items/s", "ours/raw"], rows)
    print(f"ratio={ratio:.2f} target=0.7")
    return ratio


def _measure(url: str, count: int, rounds: int) -> tuple[float, float]:
    engine = create_engine(url)
    ensure_schema(engine)
    log = EventLog(engine)
    raw_upsert = _raw_upserter(engine)
    parser = MicroblogParser()
    ours_rates: list[float] = []
    raw_rates: list[float] = []
    try:
        with engine.begin() as connection:  # the raw side's node
            raw_node = connection.exec_driver_sql(
                "INSERT INTO pubsub_node (account, service, node, created_position, "
                "updated_position, updated_at) VALUES ('raw@bench', 'raw', 'raw', 0, 0, 0) "
                "RETURNING id"
            ).scalar_one()
        for number in range(rounds):
            start = number * count
            log.append(publish_events(count, start=start, node=f"urn:xmpp:microblog:0:{number}"))
            payloads = [atom_entry(i) for i in range(start, start + count)]
            projector = Projector(engine, registry=default_registry(), batch_size=BATCH)
            sides: list[tuple[Callable[[], object], list[float]]] = [
                (projector.catch_up, ours_rates),
                (partial(_raw, raw_upsert, parser, raw_node, payloads, start), raw_rates),
            ]
            if number % 2:
                sides.reverse()
            for work, rates in sides:
                began = time.perf_counter()
                work()
                rates.append(count / (time.perf_counter() - began))
            projector.release()
            _check_projected(engine, f"urn:xmpp:microblog:0:{number}", count)
    finally:
        log.close()
        engine.dispose()
    return best_rate(ours_rates), best_rate(raw_rates)


def _check_projected(engine: Any, node: str, count: int) -> None:
    query = sa.text(
        "SELECT count(*) FROM pubsub_item JOIN pubsub_node ON pubsub_node.id = node_id "
        "WHERE pubsub_node.node = :node AND parsed IS NOT NULL"
    )
    with engine.connect() as connection:
        stored = connection.execute(query, {"node": node}).scalar_one()
    if stored != count:
        raise RuntimeError(f"the projector stored {stored} parsed items of {count}: see its log")


def _raw(
    upsert: Callable[[list[tuple[Any, ...]]], None],
    parser: MicroblogParser,
    node_id: int,
    payloads: list[str],
    start: int,
) -> None:
    encode = msgspec.json.encode
    for offset in range(0, len(payloads), BATCH):
        batch = []
        for index, payload in enumerate(payloads[offset : offset + BATCH], start + offset):
            result = parser.parse(parse_payload(payload))
            published = result.published.timestamp() if result.published else 0.0
            batch.append(
                (node_id, f"post-{index}", "juliet@capulet.lit", payload,
                 encode(result.data).decode(), parser.name, parser.version, result.text,
                 payload_hash(payload), published, 0.0, 0.0, index, index)
            )  # fmt: skip
        upsert(batch)


def _raw_upserter(engine: Any) -> Callable[[list[tuple[Any, ...]]], None]:
    if engine.dialect.name == "sqlite":
        connection = sqlite3.connect(engine.url.database, isolation_level=None)
        statement = _UPSERT.format(p="?")

        def sqlite_upsert(rows: list[tuple[Any, ...]]) -> None:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(statement, rows)
            connection.execute("COMMIT")

        return sqlite_upsert
    import psycopg

    pg = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    pg_statement = _UPSERT.format(p="%s")

    def postgres_upsert(rows: list[tuple[Any, ...]]) -> None:
        with pg.transaction(), pg.cursor() as cursor:
            cursor.executemany(pg_statement, rows)

    return postgres_upsert
