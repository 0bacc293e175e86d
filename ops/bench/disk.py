"""``pubsub-cache bench disk``: what one cached item costs on disk, part by part.

N realistic XEP-0277 items (``payloads.py``, ~800-byte Atom entries, over a few nodes) are
appended and projected; then each part of the database is measured in bytes per item: the
event log, the item and content tables (with their B-tree indexes; migration 0010 moved the
payload and its parse to ``pubsub_content``), the parsed JSON inside them, the full-text
index, the search key table. The reference is the *logical row*: the bytes of the values one
item holds, its content's through the join (payload, JSON, text, ids, numbers), what a bare
file of rows would take. Its text is the one search finds (``pubsub_item_text``), stored or,
on SQLite, derived from the JSON (migration 0012): the reference is what an item holds, not how
it is stored, so that storing less shows as a lower ratio. The ratio is the read model's
stored bytes per item (items and contents, full text, keys) over that. Every item has a
content of its own here: what the contents save on the views of a shared node,
``bench fanout`` measures.

Sizes are what the engines report, taken as they are after the projection: SQLite's ``dbstat``
(pages of each table and index, free space in them included), PostgreSQL's relation sizes after
a ``VACUUM`` (TOAST and indexes included).

Targets, stored over logical: 1.3 on SQLite, 1.6 on PostgreSQL. Issue 12's point 7 asks that
what was stored twice be cut, and names no figure; 1.3 is ours, met on SQLite, where nothing is
stored twice any more. PostgreSQL pays, beside that, for what SQLite does not (measured at 50k
items, as a share of the logical row):

- the search text kept in the item row (``text kept`` below, 0.15): the GIN index is built on an
  expression of the item row, which is what narrows a search by node inside the index (point
  2), and a lossy recheck computes it again from that row, so it cannot be derived from the
  content as SQLite's is;
- 28 bytes of header and line pointer per heap row and 12 per index entry, where SQLite's
  records take a few bytes (0.13: 7 rows and about 11 index entries per item here);
- ``jsonb`` over the JSON text (0.04);
- no compression of rows under 2 kB (TOAST starts at 2,032 bytes whatever
  ``toast_tuple_target`` says), so the ~2 kB content rows of this bench are stored whole.

1.3 plus those 0.3 is PostgreSQL's target. Two changes would bring it nearer 1.3, neither
taken: the text moved to the content row (-0.15, and content rows then pass 2 kB and compress),
which takes the narrowing by node out of the index; or the key rows (five per item here)
folded into one array on the item row under a GIN index (a prototype at 50k items: 252 bytes
per item against 487, -0.10), a second design of key search beside SQLite's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import publish_events
from pubsub_cache.ops.bench.report import BenchFailure, print_ratio, print_table
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector

#: Stored over logical, by backend (see above).
TARGETS = {"sqlite": 1.3, "postgresql": 1.6}
NODES = 4

#: The item row's values as a plain file of rows would hold them: text as UTF-8, the JSON as
#: its compact text, each number in 8 bytes (ids, positions, ranks, times).
_TEXTS = (
    "i.item_id", "i.publisher", "c.payload", "c.parsed", "c.parse_error", "c.parser", "v.text",
    "i.synced_by",
)  # fmt: skip
_NUMBERS = 12
_JOINED = (
    "pubsub_item AS i LEFT JOIN pubsub_content AS c ON c.id = i.content_id "
    "JOIN pubsub_item_text AS v ON v.id = i.id"
)


@dataclass(frozen=True)
class DiskUse:
    """Bytes per item of each part, and the logical row's."""

    log: float
    items: float
    """The item and content tables and their B-tree indexes (JSON and text included)."""
    json: float
    """The parsed JSON as stored, inside ``items``."""
    kept: float
    """The search text stored in the item rows, inside ``items``: on SQLite only a text the JSON
    cannot give back (none here), on PostgreSQL every text (see the targets above)."""
    text: float
    """The full-text index (SQLite's FTS5 tables, PostgreSQL's GIN index)."""
    keys: float
    """``pubsub_item_key`` and its indexes, and the account numbers (``pubsub_account``)."""
    logical: float

    @property
    def stored(self) -> float:
        """The read model's bytes per item: items, full text and keys."""
        return self.items + self.text + self.keys

    @property
    def ratio(self) -> float:
        """Stored bytes per item over the logical row's."""
        return self.stored / self.logical


def run(*, quick: bool, postgres_url: str | None, items: int | None = None) -> list[DiskUse]:
    """Fill and measure SQLite (and PostgreSQL); print the table and one ratio line each."""
    count = items or (5_000 if quick else 50_000)
    results: list[tuple[str, DiskUse]] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        results.append(("sqlite", _measure(sqlite_url(Path(folder) / "disk.sqlite3"), count)))
    if postgres_url:
        with scratch_postgres(postgres_url, prefix="bench") as url:
            results.append(("postgresql", _measure(url, count)))
    headers = [
        *("database", "items", "log", "items+idx", "json", "text kept", "full text", "keys"),
        *("logical", "stored"),
    ]
    rows: list[list[object]] = []
    for name, use in results:
        parts = (use.log, use.items, use.json, use.kept, use.text, use.keys, use.logical)
        rows.append([name, count, *(f"{part:,.0f}" for part in (*parts, use.stored))])
    print_table(headers, rows)
    print("(bytes per item; stored = items+idx + full text + keys)")
    for name, use in results:
        print_ratio(use.ratio, TARGETS[name], name)
    return [use for _, use in results]


def _measure(url: str, count: int) -> DiskUse:
    engine = create_engine(url)
    try:
        ensure_schema(engine)
        log = EventLog(engine)
        try:
            per_node = -(-count // NODES)
            for number in range(NODES):
                start = number * per_node
                size = min(per_node, count - start)
                for offset in range(0, size, 5_000):
                    log.append(
                        publish_events(
                            min(5_000, size - offset),
                            start=start + offset,
                            node=f"urn:xmpp:microblog:0:{number}",
                        )
                    )
        finally:
            log.close()
        projector = Projector(engine, registry=default_registry(), batch_size=500)
        projector.catch_up()
        projector.release()
        _check(engine, count)
        if engine.dialect.name == "sqlite":
            return _sqlite_use(engine, count)
        return _postgres_use(engine, count)
    finally:
        engine.dispose()


def _check(engine: Engine, count: int) -> None:
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            f"SELECT count(*) FROM {_JOINED} WHERE c.parsed IS NOT NULL AND v.text IS NOT NULL"
        ).scalar_one()
    if stored != count:
        raise BenchFailure(f"the projector stored {stored} parsed items of {count}")


def _octets(dialect: str, column: str) -> str:
    # SQLite 3.40 has no octet_length; the length of a BLOB is its bytes.
    if dialect == "sqlite":
        return f"length(CAST({column} AS BLOB))"
    return f"octet_length({column}{'::text' if column == 'c.parsed' else ''})"


def _logical(connection: Connection) -> float:
    dialect = connection.dialect.name
    values = " + ".join(f"coalesce({_octets(dialect, name)}, 0)" for name in _TEXTS)
    sql = f"SELECT avg({values} + {8 * _NUMBERS}) FROM {_JOINED}"
    return float(connection.exec_driver_sql(sql).scalar_one())


def _kept(connection: Connection) -> float:
    octets = _octets(connection.dialect.name, "i.text")
    sql = f"SELECT avg(coalesce({octets}, 0)) FROM pubsub_item AS i"
    return float(connection.exec_driver_sql(sql).scalar_one())


def _sqlite_use(engine: Engine, count: int) -> DiskUse:
    with engine.connect() as connection:
        pages: dict[str, int] = dict(
            connection.exec_driver_sql("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").all()
        )
        owners: dict[str, str] = dict(
            connection.exec_driver_sql(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"
            ).all()
        )
        json = connection.exec_driver_sql(
            f"SELECT avg(length(CAST(c.parsed AS BLOB))) FROM {_JOINED}"
        ).scalar_one()
        logical = _logical(connection)
        kept = _kept(connection)

    def of(table: str) -> float:
        return sum(size for name, size in pages.items() if owners.get(name) == table) / count

    fts = sum(size for name, size in pages.items() if name.startswith("pubsub_item_fts"))
    return DiskUse(
        log=of("event"),
        items=of("pubsub_item") + of("pubsub_content"),
        json=float(json),
        kept=kept,
        text=fts / count,
        keys=of("pubsub_item_key") + of("pubsub_account"),
        logical=logical,
    )


def _postgres_use(engine: Engine, count: int) -> DiskUse:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM")

        def size(sql: str) -> float:
            return float(connection.exec_driver_sql(sql).scalar_one() or 0) / count

        items = size(
            "SELECT pg_total_relation_size('pubsub_item') "
            "+ pg_total_relation_size('pubsub_content')"
        )
        gin = size("SELECT pg_relation_size('ix_pubsub_item_search')")
        return DiskUse(
            log=size("SELECT pg_total_relation_size('event')"),
            items=items - gin,
            json=size(f"SELECT sum(pg_column_size(c.parsed)) FROM {_JOINED}"),
            kept=_kept(connection),
            text=gin,
            keys=size(
                "SELECT pg_total_relation_size('pubsub_item_key') "
                "+ pg_total_relation_size('pubsub_account')"
            ),
            logical=_logical(connection),
        )
