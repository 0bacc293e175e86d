"""``pubsub-cache bench fanout``: what one public node subscribed by N local accounts costs the
event log and the read model (issue 13, point 6).

Views are per account, so each publication reaches the log once per subscribed account (one
``ItemsPublished`` notification each) and the read model once per view (a ``pubsub_item`` row,
its search entries); the payload and what the parser derives from it alone are stored once per
distinct content (``pubsub_content``, migration 0010). For N = 1, 10 and 200 subscribers, the
bench appends what the ingest appends for ``items`` publications of ~800-byte XEP-0277 entries,
lets the projector apply them, and measures on a fresh database each time: bytes per
notification in the ``event`` table (msgpack bodies, and pages on disk), in ``pubsub_item``,
in ``pubsub_content`` (each with its indexes) and in the search tables, net of the empty schema.
Pages on disk come from SQLite's ``dbstat`` and PostgreSQL's ``pg_total_relation_size``.
"payload", "parsed" and "text" are what one view holds (through its content): "content share"
is the part of a lone view's bytes that is its payload (in its notification and its content),
parsed JSON and text, the most that sharing could save on each extra view.

It checks that every view holds every item and that all views of one item share one content
row, and prints, last, ``ratio=`` the bytes an extra view costs (from 1 to 200 views) over a
lone view's, per backend: 1 means nothing is shared; target 0.5.
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
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node

from .payloads import MICROBLOG_NODE, atom_entry
from .report import BenchFailure, print_ratio, print_table

VIEWS = (1, 10, 200)
TARGET = 0.5
SERVICE = "juliet@capulet.lit"
#: The groups of tables measured: the log, the items, their contents, and the search entries.
GROUPS = ("event", "pubsub_item", "pubsub_content", "search")


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
    item = pubsub_item.c
    joined = pubsub_item.join(pubsub_node, pubsub_node.c.id == item.node_id)

    def count(*columns: sa.ColumnElement[object]) -> int:
        distinct = sa.select(*columns).select_from(joined).distinct().subquery()
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(distinct)).scalar_one()
        )

    rows = count(item.id, item.content_id)
    views = count(pubsub_node.c.account, item.item_id, item.content_id)
    shared = count(item.content_id)
    pairs = count(item.item_id, item.content_id)
    contents = connection.execute(
        sa.select(sa.func.count()).select_from(pubsub_content)
    ).scalar_one()
    if rows != notifications or views != notifications:
        raise BenchFailure(
            f"{backend}: {rows} views of items (expected {notifications}), "
            f"{views} distinct (account, item)"
        )
    if shared != items or pairs != items or contents != items:
        raise BenchFailure(
            f"{backend}: {shared} contents referenced, {pairs} (item, content) pairs, "
            f"{contents} content rows (expected {items} each: one content per item)"
        )


def _sums(connection: Connection) -> tuple[int, int, int, int]:
    def total(column: sa.ColumnElement[object]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.func.length(column)), 0)

    body = connection.execute(sa.select(total(event_table.c.body))).scalar_one()
    # What each view holds, through its content: counted once per view.
    payload, parsed, text = connection.execute(
        sa.select(
            total(pubsub_content.c.payload),
            total(sa.cast(pubsub_content.c.parsed, sa.Text)),
            total(pubsub_item.c.text),
        ).select_from(
            pubsub_item.outerjoin(pubsub_content, pubsub_content.c.id == pubsub_item.c.content_id)
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
    if table in {"event", "pubsub_item", "pubsub_content"}:
        return table
    if table.startswith(("pubsub_item_fts", "pubsub_item_key")):
        return "search"
    return None


def _report(figures: list[Footprint]) -> None:
    headers = ["database", "views", "notifications", "log body B", "log disk B"]
    headers += ["item disk B", "content disk B", "search disk B", "total B"]
    headers += ["payload B", "parsed B", "text B"]
    rows = [
        [
            f.backend,
            f.views,
            f.notifications,
            f"{f.body:.0f}",
            f"{f.disk['event']:.0f}",
            f"{f.disk['pubsub_item']:.0f}",
            f"{f.disk['pubsub_content']:.0f}",
            f"{f.disk['search']:.0f}",
            f"{f.total:.0f}",
            f"{f.payload:.0f}",
            f"{f.parsed:.0f}",
            f"{f.text:.0f}",
        ]
        for f in figures
    ]
    print("bytes per notification (one view of one item), net of the empty schema")
    print_table(headers, rows)
    print()
    print("payload, parsed, text: what each view reads (through its shared content). ratio: the")
    print("bytes an extra view costs (1 to 200 views) over a lone view's; the log still holds one")
    print("notification, with its payload, per view.")
    for backend in dict.fromkeys(f.backend for f in figures):
        lone = next(f for f in figures if f.backend == backend and f.views == 1)
        print(f"{backend}: content share of a lone view {lone.content_share:.0%}")
    for backend in dict.fromkeys(f.backend for f in figures):
        runs = {f.views: f for f in figures if f.backend == backend}
        print_ratio(extra_view_ratio(runs[1], runs[max(VIEWS)]), TARGET, backend)


def extra_view_ratio(lone: Footprint, many: Footprint) -> float:
    """The bytes each view beyond the first costs, over the bytes of a lone view."""
    extra = (many.total * many.views - lone.total * lone.views) / (many.views - lone.views)
    return extra / lone.total
