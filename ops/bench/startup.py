"""``pubsub-cache bench cli``: start-up of the command line beside the imports it needs.

Two cases, each timed as a whole process (fork, interpreter, imports, work, exit) and beside its
reference in the same run, the runs of each pair alternating:

- **cached read**: ``pubsub-cache get --cache-only --json SERVICE NODE`` of a synced 20-item node
  in an SQLite cache, beside ``python -c "import sqlalchemy, sqlite3, click"``;
- **help**: ``pubsub-cache --help``, beside ``python -c "import click"``.

The node is filled through the log and the projector first (not timed). Each read's output is
checked (20 items, from the cache), so a fast failure does not pass for a fast read. Prints the
medians, then ``ratio=`` (the worse of the two cases) ``target=1.5 backend=sqlite``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pubsub_cache.events import Item, SyncCompleted, SyncPageFetched, SyncStarted
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import sqlite_url

from .payloads import MICROBLOG_NODE, atom_entry
from .report import BenchFailure, print_ratio, print_table

ACCOUNT = "romeo@montague.lit"
SERVICE = "pubsub.capulet.lit"
ITEMS = 20
TARGET = 1.5

#: The console script's own code: what ``pubsub-cache`` runs, with this interpreter.
_SCRIPT = "import sys; from pubsub_cache.ops.cli import main; sys.exit(main())"


def run(*, quick: bool, repeat: int | None = None) -> float:
    """Measure both cases; print the table and the ratio line; return the ratio."""
    runs = repeat or (5 if quick else 11)
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        url = sqlite_url(Path(folder) / "cli.sqlite3")
        fill_node(url)
        env = {
            **os.environ,
            "PUBSUB_CACHE_DATABASE_URL": url,
            "PUBSUB_CACHE_JID": ACCOUNT,
        }
        env.pop("PUBSUB_CACHE_CONFIG", None)
        env.pop("PUBSUB_CACHE_PASSWORD", None)
        # The warm-up below writes the bytecode, as ``pip install`` does for an installed copy:
        # with this set (as it is on the development machines), every run would compile the
        # package's modules from source, which no installed ``pubsub-cache`` does.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        get = [_SCRIPT, "get", "--cache-only", "--json", SERVICE, MICROBLOG_NODE]
        cases = {
            "cached read": (get, ["import sqlalchemy, sqlite3, click"]),
            "--help": ([_SCRIPT, "--help"], ["import click"]),
        }
        rows: list[list[object]] = []
        ratios: list[float] = []
        for name, (ours, reference) in cases.items():
            ours_s, reference_s = _alternate(ours, reference, env, runs)
            ratio = ours_s / reference_s
            ratios.append(ratio)
            rows.append([name, runs, ours_s * 1000, reference_s * 1000, ratio])
    print_table(["case", "runs", "ours ms (p50)", "reference ms (p50)", "ours/reference"], rows)
    ratio = max(ratios)
    print_ratio(ratio, TARGET, "sqlite")
    return ratio


def fill_node(url: str) -> None:
    """A synced node of ``ITEMS`` items (``SERVICE``, ``MICROBLOG_NODE``) for ``ACCOUNT``,
    through the log and the projector (tests/cli/test_startup.py reads it too)."""
    from pubsub_cache.projector.analysers import default_registry
    from pubsub_cache.projector.runner import Projector

    engine = create_engine(url)
    ensure_schema(engine)
    log = EventLog(engine)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    items = [Item(id=f"post-{n}", publisher=SERVICE, payload=atom_entry(n)) for n in range(ITEMS)]
    node = MICROBLOG_NODE
    log.append(
        [
            SyncStarted(
                account=ACCOUNT, service=SERVICE, node=node, observed_at=now, sync_id="bench"
            ),
            SyncPageFetched(
                account=ACCOUNT,
                service=SERVICE,
                node=node,
                observed_at=now,
                sync_id="bench",
                items=items,
                page=0,
            ),
            SyncCompleted(
                account=ACCOUNT,
                service=SERVICE,
                node=node,
                observed_at=now,
                sync_id="bench",
                complete=True,
                item_count=ITEMS,
            ),
        ]
    )
    Projector(engine, registry=default_registry()).catch_up()
    log.close()
    engine.dispose()


def _alternate(
    ours: list[str], reference: list[str], env: dict[str, str], runs: int
) -> tuple[float, float]:
    """Median seconds of ``python -c`` of each side, the sides alternating (after a warm-up)."""
    seconds: tuple[list[float], list[float]] = ([], [])
    _time(ours, env)  # warm the page cache and the bytecode of both sides
    _time(reference, env)
    for number in range(runs):
        pair = [(ours, seconds[0]), (reference, seconds[1])]
        for command, found in pair if number % 2 == 0 else reversed(pair):
            found.append(_time(command, env))
    return statistics.median(seconds[0]), statistics.median(seconds[1])


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", *command], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchFailure(f"{command[1:] or command} exited {done.returncode}: {done.stderr}")
    if "get" in command:
        page = json.loads(done.stdout)
        if len(page["items"]) != ITEMS or not page["from_cache"]:
            raise BenchFailure(f"the cached read returned {done.stdout[:200]}")
    elif "--help" in command and "Commands:" not in done.stdout:
        raise BenchFailure(f"--help printed {done.stdout[:200]}")
    return elapsed
