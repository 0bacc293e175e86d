"""``pubsub-cache bench project``: the projector's rate on XEP-0277 items beside a raw baseline.

Ours: N ItemsPublished events (one ~800-byte Atom entry each) are already in the log; the clock
runs while the projector reads, decodes, parses, upserts and checkpoints them in batches.
Raw, in the same run and database: the same payloads parsed by the same parser, and the same
rows upserted into ``pubsub_item`` (on SQLite without the text the JSON gives back, as the
projector: ``projector/search_text.py``) with the driver's ``executemany`` of one hand-written
``INSERT ... ON CONFLICT`` per batch. Theirs: the same events projected by the ``eventsourcing``
library (``project_es.py``), when it is installed. Rounds rotate the sides, the best of each is
kept. One ratio line per backend: ours/raw, target 0.7; ours/theirs is printed beside it.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench import project_es
from pubsub_cache.ops.bench.payloads import atom_entry, publish_events
from pubsub_cache.ops.bench.report import BenchFailure, best_rate, print_ratio, print_table
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parsers import MicroblogParser, ParsedPayload
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.search_text import is_derived
from pubsub_cache.projector.xmlsafe import parse_payload

BATCH = 500
THEIR_ITEMS = 1_000
# The raw side writes what the projector writes: the content if absent, then the item naming it
# (its id looked up by digest in the same statement). ``{p}``: the driver's parameter mark.
_COLUMNS = (
    "node_id, item_id, publisher, content_id, text, "
    "published_at, created_at, updated_at, created_position, updated_position"
)
CONTENT_INSERT = (
    "INSERT INTO pubsub_content (digest, parser, parser_version, parsed, payload) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (digest) DO NOTHING"
)
_UPSERT = (
    f"INSERT INTO pubsub_item ({_COLUMNS}) VALUES ({{p}}, {{p}}, {{p}}, "
    f"(SELECT id FROM pubsub_content WHERE digest = {{p}}), {', '.join(['{p}'] * 6)}) "
    "ON CONFLICT (node_id, item_id) DO UPDATE SET content_id = excluded.content_id, "
    "text = excluded.text, "
    "updated_at = excluded.updated_at, updated_position = excluded.updated_position"
)


def raw_rows(
    node_id: int,
    item_id: str,
    publisher: str,
    payload: str,
    parsed: str,
    parser: MicroblogParser,
    text: str | None,
    published: float,
    position: int,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The content row and the item row of one item, for :data:`CONTENT_INSERT` and the
    item upsert."""
    digest = content_digest(payload, parser.name, parser.version)
    return (
        (digest, parser.name, parser.version, parsed, payload),
        (node_id, item_id, publisher, digest, text, published, 0.0, 0.0, position, position),
    )  # fmt: skip


def stored_text(result: ParsedPayload, *, derives_text: bool) -> str | None:
    """The text the projector stores: on SQLite (``derives_text``) none when the JSON gives it
    back (``projector/search_text.py``)."""
    if derives_text and is_derived(result.text, result.data):
        return None
    return result.text


def run(*, quick: bool, postgres_url: str | None, rounds: int = 3) -> float:
    """Measure on SQLite (and PostgreSQL); print the table; return the smallest ratio."""
    count = 4_000 if quick else 20_000
    theirs = project_es.available()
    results: list[tuple[str, Rates]] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        results.append(
            (
                "sqlite",
                _measure(sqlite_url(Path(folder) / "project.sqlite3"), count, rounds, theirs),
            )
        )
    if postgres_url:
        with scratch_postgres(postgres_url, prefix="bench") as url:
            results.append(("postgresql", _measure(url, count, rounds, theirs)))
    print_table(
        ["database", "items", "ours items/s", "raw items/s", "theirs items/s", "ours/raw",
         "ours/theirs"],
        [
            [name, count, r.ours, r.raw, r.theirs or "-", r.ours / r.raw,
             r.ours / r.theirs if r.theirs else "-"]
            for name, r in results
        ],
    )  # fmt: skip
    if not theirs:
        print(
            f"theirs: skipped, the eventsourcing library is not installed "
            f"(pip install 'eventsourcing=={project_es.VERSION}', or the [bench] extra)"
        )
    for name, rates in results:
        print_ratio(rates.ours / rates.raw, 0.7, name)
    return min(rates.ours / rates.raw for _, rates in results)


class Rates(NamedTuple):
    """The best rate of each side, in items per second (``theirs`` when it ran)."""

    ours: float
    raw: float
    theirs: float | None


def _measure(url: str, count: int, rounds: int, theirs: bool) -> Rates:
    engine = create_engine(url)
    ensure_schema(engine)
    log = EventLog(engine)
    raw_upsert = _raw_upserter(engine)
    parser = MicroblogParser()
    rates: dict[str, list[float]] = {"ours": [], "raw": [], "theirs": []}
    # The library commits once per event (about a hundred a second here): a rate needs fewer.
    their_count = min(count, THEIR_ITEMS)
    try:
        raw_node, their_node = (_bench_node(engine, name) for name in ("raw", "theirs"))
        for number in range(rounds):
            start = number * count
            node = f"urn:xmpp:microblog:0:{number}"
            log.append(publish_events(count, start=start, node=node))
            payloads = [atom_entry(i) for i in range(start, start + count)]
            projector = Projector(engine, registry=default_registry(), batch_size=BATCH)
            raw = partial(
                _raw, raw_upsert, parser, raw_node, payloads, start,
                derives_text=engine.dialect.name == "sqlite",
            )  # fmt: skip
            sides: list[tuple[str, Callable[[], float]]] = [
                ("ours", partial(_timed, projector.catch_up, count)),
                ("raw", partial(_timed, raw, count)),
            ]
            if theirs:
                events = publish_events(their_count, start=start, node=f"theirs:{number}")
                mark = "?" if engine.dialect.name == "sqlite" else "%s"
                upsert, contents = _UPSERT.format(p=mark), CONTENT_INSERT.format(p=mark)
                sides.append(
                    (
                        "theirs",
                        partial(project_es.measure, url, events, their_node, upsert, contents),
                    )
                )
            shift = number % len(sides)
            for name, work in sides[shift:] + sides[:shift]:
                rates[name].append(work())
            projector.release()
            _check_projected(engine, _node_id(engine, node), count)
            if theirs:
                _check_projected(engine, their_node, their_count * (number + 1))
    finally:
        log.close()
        engine.dispose()
    return Rates(
        best_rate(rates["ours"]),
        best_rate(rates["raw"]),
        best_rate(rates["theirs"]) if rates["theirs"] else None,
    )


def _timed(work: Callable[[], object], count: int) -> float:
    began = time.perf_counter()
    work()
    return count / (time.perf_counter() - began)


def _bench_node(engine: Any, name: str) -> int:
    with engine.begin() as connection:
        return int(
            connection.exec_driver_sql(
                "INSERT INTO pubsub_node (account, service, node, created_position, "
                "updated_position, updated_at) "
                f"VALUES ('{name}@bench', '{name}', '{name}', 0, 0, 0) RETURNING id"
            ).scalar_one()
        )


def _node_id(engine: Any, node: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT id FROM pubsub_node WHERE node = :node"), {"node": node}
            ).scalar_one()
        )


def _check_projected(engine: Any, node_id: int, count: int) -> None:
    query = sa.text(
        "SELECT count(*) FROM pubsub_item AS i JOIN pubsub_content AS c ON c.id = i.content_id "
        "WHERE i.node_id = :node_id AND c.parsed IS NOT NULL"
    )
    with engine.connect() as connection:
        stored = connection.execute(query, {"node_id": node_id}).scalar_one()
    if stored != count:
        raise BenchFailure(f"{stored} parsed items stored in node {node_id}, expected {count}")


def _raw(
    upsert: Callable[[list[tuple[tuple[Any, ...], tuple[Any, ...]]]], None],
    parser: MicroblogParser,
    node_id: int,
    payloads: list[str],
    start: int,
    *,
    derives_text: bool,
) -> None:
    encode = msgspec.json.encode
    for offset in range(0, len(payloads), BATCH):
        batch = []
        for index, payload in enumerate(payloads[offset : offset + BATCH], start + offset):
            result = parser.parse(parse_payload(payload))
            published = result.published.timestamp() if result.published else 0.0
            text = stored_text(result, derives_text=derives_text)
            batch.append(
                raw_rows(node_id, f"post-{index}", "juliet@capulet.lit", payload,
                         encode(result.data).decode(), parser, text, published, index)
            )  # fmt: skip
        upsert(batch)


Rows = list[tuple[tuple[Any, ...], tuple[Any, ...]]]


def _raw_upserter(engine: Any) -> Callable[[Rows], None]:
    if engine.dialect.name == "sqlite":
        connection = sqlite3.connect(engine.url.database, isolation_level=None)
        statement = _UPSERT.format(p="?")
        contents = CONTENT_INSERT.format(p="?")

        def sqlite_upsert(rows: Rows) -> None:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(contents, [content for content, _ in rows])
            connection.executemany(statement, [item for _, item in rows])
            connection.execute("COMMIT")

        return sqlite_upsert
    import psycopg

    pg = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    pg_statement = _UPSERT.format(p="%s")
    pg_contents = CONTENT_INSERT.format(p="%s")

    def postgres_upsert(rows: Rows) -> None:
        with pg.transaction(), pg.cursor() as cursor:
            cursor.executemany(pg_contents, [content for content, _ in rows])
            cursor.executemany(pg_statement, [item for _, item in rows])

    return postgres_upsert
