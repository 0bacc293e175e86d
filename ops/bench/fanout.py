"""``pubsub-cache bench fanout``: what one public node subscribed by N local accounts costs the
event log and the read model (issue 13, point 6).

Views are per account, so each publication reaches the log once per subscribed account (one
``ItemsPublished`` notification each) and the read model once per view (a ``pubsub_item`` row,
its search entries). For N = 1, 10 and 200 subscribers, the bench appends what the ingest
appends for ``items`` publications of ~800-byte XEP-0277 entries, lets the projector apply
them, and measures on a fresh database each time: bytes per notification in the ``event``
table (msgpack bodies, and pages on disk), and in the read model (``pubsub_item`` with its
indexes; the search tables apart), net of the empty schema. Pages on disk come from SQLite's
``dbstat`` and PostgreSQL's ``pg_total_relation_size``. "payload share" is the part of each
view's bytes that is the payload itself, stored again for every view (in its notification and
its row); "content share" adds what the projector derives from the payload alone (parsed JSON,
text): the most that storing them once per distinct payload (by hash) could save.

It checks that every view holds every item with one payload hash per item, and prints, last,
``ratio=`` bytes per notification at 200 views over those at 1 view, per backend: 1 means each
view costs what a lone view does (nothing shared, nothing worse), target 1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.events.types import Item, ItemsPublished
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item

from .payloads import MICROBLOG_NODE, atom_entry
from .report import BenchFailure, print_ratio, print_table

VIEWS = (1, 10, 200)
TARGET = 1.0
SERVICE = "juliet@capulet.lit"
#: The groups of tables measured: the log, the items, and the search entries derived from them.
GROUPS = ("event", "pubsub_item", "search")


@dataclass(frozen=True)
class Footprint:
    """Bytes per notification for one count of views on one database."""

    backend: str
    views: int
    notifications: int
    body: float
    disk: dict[str, float]
    payload: float
    parsed: float
    text: float

    @property
    def total(self) -> float:
        return sum(self.disk.values())

    @property
    def payload_share(self) -> float:
        """The payload's part of the bytes a view costs on disk (log and read model)."""
        return 2 * self.payload / self.total

    @property
    def content_share(self) -> float:
        """The part of what is derived from the payload alone: the payload (log and read
        model), its parsed JSON and its text: what one copy per distinct payload could hold."""
        return (2 * self.payload + self.parsed + self.text) / self.total


def run(*, quick: bool, postgres_url: str | None) -> list[Footprint]:
    """Measure every count of views on SQLite (and PostgreSQL); print; return the figures."""
    items = 20 if quick else 100
    figures: list[Footprint] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        for backend in ("sqlite", "postgresql") if postgres_url else ("sqlite",):
            for views in VIEWS:
                with _database(backend, Path(folder), postgres_url, views) as url:
                    figures.append(_measure(backend, url, views, items))
    _report(figures)
    return figures


@contextmanager
def _database(backend: str, folder: Path, postgres_url: str | None, views: int) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(folder / f"fanout-{views}.sqlite3")
        return
    assert postgres_url is not None
    with scratch_postgres(postgres_url, prefix="bench") as url:
        yield url


def _measure(backend: str, url: str, views: int, items: int) -> Footprint:
    engine = create_engine(url)
    try:
        ensure_schema(engine)
        empty = _disk(engine)
        accounts = [f"reader{n}@montague.lit" for n in range(views)]
        log = EventLog(engine)
        observed = datetime(2026, 11, 27, tzinfo=UTC)
        for number in range(items):  # as the ingests append them: one per subscriber
            item = Item(id=f"post-{number}", publisher=SERVICE, payload=atom_entry(number))
            log.append(
                ItemsPublished(
                    account=account,
                    service=SERVICE,
                    node=MICROBLOG_NODE,
                    observed_at=observed,
                    items=[item],
                )
                for account in accounts
            )
        log.close()
        Projector(engine, registry=default_registry()).catch_up()
        notifications = views * items
        with engine.connect() as connection:
            _check(connection, backend, notifications, items)
            body, payload, parsed, text = _sums(connection)
        disk = _disk(engine)
    finally:
        engine.dispose()
    return Footprint(
        backend=backend,
        views=views,
        notifications=notifications,
        body=body / notifications,
        disk={group: (disk[group] - empty[group]) / notifications for group in GROUPS},
        payload=payload / notifications,
        parsed=parsed / notifications,
        text=text / notifications,
    )


def _check(connection: Connection, backend: str, notifications: int, items: int) -> None:
    rows = connection.execute(sa.select(sa.func.count()).select_from(pubsub_item)).scalar_one()
    hashes = connection.execute(
        sa.select(sa.func.count(sa.distinct(pubsub_item.c.payload_hash)))
    ).scalar_one()
    if rows != notifications or hashes != items:
        raise BenchFailure(
            f"{backend}: {rows} views of items (expected {notifications}), "
            f"{hashes} distinct payload hashes (expected {items})"
        )


def _sums(connection: Connection) -> tuple[int, int, int, int]:
    def total(column: sa.ColumnElement[object]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.func.length(column)), 0)

    body = connection.execute(sa.select(total(event_table.c.body))).scalar_one()
    payload, parsed, text = connection.execute(
        sa.select(
            total(pubsub_item.c.payload),
            total(sa.cast(pubsub_item.c.parsed, sa.Text)),
            total(pubsub_item.c.text),
        )
    ).one()
    return int(body), int(payload), int(parsed), int(text)


def _disk(engine: Engine) -> dict[str, int]:
    """Bytes on disk by group of tables (each table with its indexes)."""
    sizes = dict.fromkeys(GROUPS, 0)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(
                "SELECT m.tbl_name, sum(d.pgsize) FROM dbstat AS d "
                "JOIN sqlite_master AS m ON m.name = d.name GROUP BY m.tbl_name"
            ).all()
        else:
            rows = connection.exec_driver_sql(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c "
                "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
            ).all()
    for table, size in rows:
        group = _group(str(table))
        if group is not None:
            sizes[group] += int(size)
    return sizes


def _group(table: str) -> str | None:
    if table in {"event", "pubsub_item"}:
        return table
    if table.startswith(("pubsub_item_fts", "pubsub_item_key")):
        return "search"
    return None


def _report(figures: list[Footprint]) -> None:
    headers = ["database", "views", "notifications", "log body B", "log disk B"]
    headers += ["item disk B", "search disk B", "total B", "payload B", "parsed B", "text B"]
    headers += ["payload share", "content share"]
    rows = [
        [
            f.backend,
            f.views,
            f.notifications,
            f"{f.body:.0f}",
            f"{f.disk['event']:.0f}",
            f"{f.disk['pubsub_item']:.0f}",
            f"{f.disk['search']:.0f}",
            f"{f.total:.0f}",
            f"{f.payload:.0f}",
            f"{f.parsed:.0f}",
            f"{f.text:.0f}",
            f"{f.payload_share:.0%}",
            f"{f.content_share:.0%}",
        ]
        for f in figures
    ]
    print("bytes per notification (one view of one item), net of the empty schema")
    print_table(headers, rows)
    print()
    print("payload share: the payload's bytes (in the log and in pubsub_item) over the total;")
    print("content share: the same with the parsed JSON and text derived from it. Storing them")
    print("once per distinct payload (by hash) would save at most that share of each extra view.")
    for backend in dict.fromkeys(f.backend for f in figures):
        runs = {f.views: f for f in figures if f.backend == backend}
        print_ratio(runs[max(VIEWS)].total / runs[1].total, TARGET, backend)
