"""``pubsub-cache bench replay``: rebuilding from the log, beside the projector's own rate.

One SQLite log of N XEP-0277 publications over 50 nodes. Each round, the live projector applies
it from position 0 (the reference rate), then a rebuild (shadow tables, then the swap) runs in a
child process, which reports its own time (up to the committed swap: the retired tables are
dropped afterwards, while the new model already serves), its peak RSS and the item count.
Best round of each.

Then the memory case: a log of sync pages of 1,000 entries (about 0.9 MB each), replayed by a
child with the default batch; its peak RSS must stay under 300 MB whatever the log (batches are
bounded in bytes, projector/runner.py ``BATCH_BYTES``). Each child's item count is checked.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from pubsub_cache.events import Item, SyncPageFetched
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.migrations.api import downgrade, ensure_schema
from pubsub_cache.ops.bench.payloads import MICROBLOG_NODE, atom_entry, publish_events
from pubsub_cache.ops.bench.report import best_rate, print_table
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item

NODES = 50
#: Sync pages in the memory case (each 1,000 entries, about 0.9 MB encoded).
PAGES, QUICK_PAGES = 300, 60
PAGE_ITEMS = 1000
RSS_TARGET_MB = 300


def run(*, quick: bool, events: int | None = None, rounds: int | None = None) -> float:
    """Fill a log, time projector and replay; print the table; return the ratio."""
    count = events or (20_000 if quick else 1_000_000)
    rounds = rounds or (3 if quick else 1)
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        url = sqlite_url(Path(folder) / "replay.sqlite3")
        engine = create_engine(url)
        ensure_schema(engine)
        log = EventLog(engine)
        for start in range(0, count, 1000):
            size = min(1000, count - start)
            node = f"urn:xmpp:microblog:0:{(start // 1000) % NODES}"
            log.append(publish_events(size, start=start, node=node))
        log.close()
        project_rates: list[float] = []
        replay_rates: list[float] = []
        peaks: list[float] = []
        clean_ups: list[float] = []
        for _ in range(rounds):
            # The read model is dropped and recreated: the projector starts from position 0.
            downgrade(engine, "0001")
            ensure_schema(engine)
            began = time.perf_counter()
            projector = Projector(engine, registry=default_registry(), batch_size=1000)
            projector.catch_up()
            projector.release()
            project_rates.append(count / (time.perf_counter() - began))
            child = subprocess.run(
                [sys.executable, "-m", "pubsub_cache.ops.bench.replay", url],
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(child.stdout)
            _check(report, count, "publications")
            replay_rates.append(count / report["seconds"])
            peaks.append(report["peak_rss_mb"])
            clean_ups.append(report["clean_up"])
        engine.dispose()
        pages = QUICK_PAGES if quick else PAGES
        paged = _sync_pages(Path(folder) / "pages.sqlite3", pages)
        _check(paged, pages * PAGE_ITEMS, "sync-page items")
    project_rate, replay_rate = best_rate(project_rates), best_rate(replay_rates)
    ratio = replay_rate / project_rate
    print_table(
        ["events", "projector ev/s", "replay ev/s", "clean-up s", "peak RSS MB", "ratio"],
        [[count, project_rate, replay_rate, min(clean_ups), max(peaks), ratio]],
    )
    print_table(
        ["sync pages", "MB encoded", "replay s", "peak RSS MB"],
        [[pages, paged["log_mb"], paged["seconds"], paged["peak_rss_mb"]]],
    )
    peak = max(*peaks, paged["peak_rss_mb"])
    print(f"peak_rss_mb={peak:.0f} target={RSS_TARGET_MB} (sync pages: {paged['peak_rss_mb']:.0f})")
    print(f"ratio={ratio:.2f} target=1.0 backend=sqlite")
    return ratio


def _sync_pages(path: Path, pages: int) -> dict[str, float]:
    """Fill a log with ``pages`` sync pages; replay it in a child; the child's report."""
    url = sqlite_url(path)
    engine = create_engine(url)
    ensure_schema(engine)
    log = EventLog(engine)
    observed = datetime(2026, 11, 27, tzinfo=UTC)
    for number in range(pages):
        start = number * PAGE_ITEMS
        items = [
            Item(id=f"post-{i}", publisher="juliet@capulet.lit", payload=atom_entry(i))
            for i in range(start, start + PAGE_ITEMS)
        ]
        page = SyncPageFetched(
            account="romeo@montague.lit",
            service="juliet@capulet.lit",
            node=f"{MICROBLOG_NODE}:{number % NODES}",
            observed_at=observed,
            sync_id=f"sync-{number}",
            items=items,
            source="fetch",
        )
        log.append([page])
    log.close()
    with engine.connect() as connection:
        size = connection.execute(sa.select(sa.func.sum(sa.func.length(event_table.c.body))))
        log_mb = int(size.scalar() or 0) / 2**20
    engine.dispose()
    child = subprocess.run(
        [sys.executable, "-m", "pubsub_cache.ops.bench.replay", url],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, float] = json.loads(child.stdout)
    return {**report, "log_mb": log_mb}


def _check(report: dict[str, float], expected: int, what: str) -> None:
    if report["items"] != expected:
        raise SystemExit(f"bench replay: {report['items']} {what} rebuilt, expected {expected}")


def _child(url: str) -> None:
    engine = create_engine(url)
    began = time.perf_counter()
    rebuild = Rebuild(engine, default_registry(), batch_size=1000)
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    rebuild.finish(swap=True, verify=False)
    seconds = time.perf_counter() - began
    began = time.perf_counter()
    rebuild.clean_up()
    clean_up = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with engine.connect() as connection:
        items = connection.execute(sa.select(sa.func.count()).select_from(pubsub_item)).scalar()
    report = {"seconds": seconds, "clean_up": clean_up, "peak_rss_mb": peak, "items": items}
    print(json.dumps(report))


if __name__ == "__main__":
    _child(sys.argv[1])
