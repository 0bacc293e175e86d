"""``pubsub-cache bench replay``: rebuilding from the log, beside the projector's own rate.

One SQLite log of N XEP-0277 publications over 50 nodes. Each round, the live projector applies
it from position 0 (the reference rate), then a rebuild (shadow tables, then the swap) runs in a
child process, which reports its own time (up to the committed swap: the retired tables are
dropped afterwards, while the new model already serves) and peak RSS. Best round of each.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import downgrade, ensure_schema
from pubsub_cache.ops.bench.payloads import publish_events
from pubsub_cache.ops.bench.report import best_rate, print_table
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector

NODES = 50


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
            replay_rates.append(count / report["seconds"])
            peaks.append(report["peak_rss_mb"])
            clean_ups.append(report["clean_up"])
        engine.dispose()
    project_rate, replay_rate = best_rate(project_rates), best_rate(replay_rates)
    report = {"peak_rss_mb": max(peaks)}
    ratio = replay_rate / project_rate
    print_table(
        ["events", "projector ev/s", "replay ev/s", "clean-up s", "peak RSS MB", "ratio"],
        [[count, project_rate, replay_rate, min(clean_ups), report["peak_rss_mb"], ratio]],
    )
    print(f"peak_rss_mb={report['peak_rss_mb']:.0f} target=300")
    print(f"ratio={ratio:.2f} target=1.0")
    return ratio


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
    print(json.dumps({"seconds": seconds, "clean_up": clean_up, "peak_rss_mb": peak}))


if __name__ == "__main__":
    _child(sys.argv[1])
