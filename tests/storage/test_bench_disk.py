"""``pubsub-cache bench disk`` runs end to end on a small fill, measures every part, shows the
search text kept in PostgreSQL's item rows alone, and ends with one ratio line per backend
(targets 1.3 on SQLite, 1.6 on PostgreSQL: see ops/bench/disk.py). A new SQLite database gets
16 kB pages (issue 12, point 7).

Sizes are read by hand from a full run; here only what must hold whatever the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pubsub_cache.events.db import create_engine
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import sqlite_url


def test_a_small_run_measures_each_part_and_prints_one_ratio_line_per_backend() -> None:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "bench", "disk"]
    result = subprocess.run(
        [*command, "--items", "400"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    backends = ["sqlite", "postgresql"] if os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL") else []
    backends = backends or ["sqlite"]
    ratios = lines[-len(backends) :]
    assert [line.rpartition("backend=")[2] for line in ratios] == backends
    targets = {"sqlite": "1.3", "postgresql": "1.6"}
    assert all(
        line.startswith("ratio=") and f" target={targets[backend]} " in line
        for line, backend in zip(ratios, backends, strict=True)
    )
    for backend in backends:
        row = next(line.split() for line in lines if line.split()[:1] == [backend])
        log, items, json, kept, text, keys, logical, stored = (
            float(cell.replace(",", "")) for cell in row[2:]
        )
        # ~800-byte entries: every part holds something, the JSON sits inside the item table.
        assert min(log, items, json, text, keys) > 0
        assert json < items
        assert 1_000 < logical < stored
        # The search text is kept in the item rows on PostgreSQL alone (its GIN reads it there);
        # SQLite derives every text of these entries from their JSON.
        if backend == "sqlite":
            assert kept == 0
        else:
            assert 100 < kept < items


def test_a_new_sqlite_database_has_16_kb_pages(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "new.sqlite3"))
    try:
        ensure_schema(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA page_size").scalar_one() == 16384
    finally:
        engine.dispose()
