"""``pubsub-cache bench search``: search time as the read model grows (issue 12, point 2).

The read model is filled to 2k items, then to 200k (and 1M without ``--quick``; ``--quick``
stops at 50k) by rows written straight into ``pubsub_item`` (the index triggers run as for the
projector). Two accounts: ``big@bench`` takes the growth, ``small@bench`` keeps 1,000 items.
Four searches, each with the same answer at every size (counts checked): a field equality and a
tag overlap on the big account, a rare word there, a word common to every item of every account
in the small one. The figure is the median time of each search; its growth is its time over its
time at 2k, and the ratio printed per backend is the largest growth (target: at most 5).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.report import BenchFailure, print_ratio, print_table
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node
from pubsub_cache.query import BlockingQuery, Filter, SearchResult

BIG, SMALL = "big@bench", "small@bench"
SMALL_ITEMS = 1_000
SEEDED = 5
"""Items of the big account holding the needle title, each needle tag, the rare word."""
BATCH = 5_000
REPEAT = 15
TARGET = 5.0
_VOCABULARY = ("pubsub", "cache", "event", "node", "item", "server", "client", "stanza")

SEARCHES: dict[str, tuple[str, dict[str, Any], int]] = {
    "field eq": (BIG, {"filters": [Filter("title", "eq", "needle title")]}, SEEDED),
    "tag overlap": (
        BIG,
        {"filters": [Filter("tags", "overlap", ["needle-a", "needle-b"])]},
        2 * SEEDED,
    ),
    "rare word": (BIG, {"text": "zyzzyva"}, SEEDED),
    "common word": (SMALL, {"text": "common"}, SMALL_ITEMS),
}


def run(*, quick: bool, postgres_url: str | None) -> dict[str, float]:
    """Measure on SQLite (and PostgreSQL); print the table; return the ratio per backend."""
    sizes = (2_000, 50_000) if quick else (2_000, 200_000, 1_000_000)
    ratios: dict[str, float] = {}
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        ratios["sqlite"] = _measure(sqlite_url(Path(folder) / "search.sqlite3"), sizes, rows)
    if postgres_url:
        with scratch_postgres(postgres_url, prefix="bench") as url:
            ratios["postgresql"] = _measure(url, sizes, rows)
    print_table(["backend", "items", "search", "median ms", "growth"], rows)
    for backend, ratio in ratios.items():
        print_ratio(ratio, TARGET, backend)
    return ratios


def _measure(url: str, sizes: tuple[int, ...], table: list[list[object]]) -> float:
    engine = create_engine(url)
    try:
        ensure_schema(engine)
        filler = _Filler(engine)
        first: dict[str, float] = {}
        worst = 0.0
        for size in sizes:
            filler.fill_to(size)
            with BlockingQuery.open(engine) as query:
                for name, (account, options, expected) in SEARCHES.items():
                    seconds = _time(partial(query.search, account, **options), expected, name)
                    first.setdefault(name, seconds)
                    growth = seconds / first[name]
                    worst = max(worst, growth)
                    table.append([engine.dialect.name, size, name, seconds * 1000, growth])
        return worst
    finally:
        engine.dispose()


def _time(search: Callable[[], SearchResult], expected: int, name: str) -> float:
    result = search()  # warm the caches
    if result.total != expected or len(result.hits) != min(expected, 20):
        raise BenchFailure(f"{name}: {result.total} matches, expected {expected}")
    runs = []
    for _ in range(REPEAT):
        began = time.perf_counter()
        search()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


class _Filler:
    """Writes items up to a total: the small account's first, then the big one's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0
        with engine.begin() as connection:
            self.nodes = {
                (account, node): connection.execute(
                    pubsub_node.insert()
                    .values(
                        account=account,
                        service="juliet@capulet.lit",
                        node=f"urn:xmpp:microblog:0:{node}",
                        type="blog",
                        created_position=0,
                        updated_position=0,
                        updated_at=0.0,
                    )
                    .returning(pubsub_node.c.id)
                ).scalar_one()
                for account in (BIG, SMALL)
                for node in range(4)
            }

    def fill_to(self, total: int) -> None:
        while self.count < total:
            size = min(BATCH, total - self.count)
            rows = [self._row(n) for n in range(self.count, self.count + size)]
            # Each item has its content (pubsub_content, migration 0010), numbered as the item.
            contents = []
            for n, row in enumerate(rows, self.count):
                payload = row.pop("payload")
                contents.append(
                    {
                        "id": n + 1,
                        "digest": content_digest(payload, "bench", n),
                        "parser": "bench",
                        "parser_version": n,
                        "payload": payload,
                        "parsed": row.pop("parsed"),
                    }
                )
            with self.engine.begin() as connection:
                connection.execute(pubsub_content.insert(), contents)
                connection.execute(pubsub_item.insert(), rows)
            self.count += size
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as connection:  # as autovacuum would after such growth
                connection.exec_driver_sql("ANALYZE")

    def _row(self, n: int) -> dict[str, Any]:
        account = SMALL if n < SMALL_ITEMS else BIG
        big = n - SMALL_ITEMS  # the big account's own count
        needle = 0 <= big < SEEDED
        title = "needle title" if needle else f"Post number {n}"
        tags = [f"tag{n % 50}", "bench"]
        if 0 <= big - SEEDED < 2 * SEEDED:
            tags.append("needle-a" if big % 2 else "needle-b")
        words = " ".join(_VOCABULARY[(n + k) % len(_VOCABULARY)] for k in range(30))
        text = f"{title}\n{words} common item{n}" + (" zyzzyva" if needle else "")
        parsed = {
            "kind": "entry",
            "title": title,
            "content": text,
            "author": {"name": "Juliet", "jid": "juliet@capulet.lit"},
            "tags": tags,
        }
        return {
            "node_id": self.nodes[(account, n % 4)],
            "item_id": f"post-{n}",
            "publisher": "juliet@capulet.lit",
            "payload": f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{title}</title>"
            f"<content>{text}</content></entry>",
            "parsed": parsed,
            "content_id": n + 1,
            "text": text,
            "published_at": float(n),
            "created_at": float(n),
            "updated_at": float(n),
            "created_position": n + 1,
            "updated_position": n + 1,
        }
