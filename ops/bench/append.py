"""``pubsub-cache bench append``: the event log's append rate beside raw ``executemany``.

Both sides write the same rows (account, service, node, type, time, msgpack body of an event
carrying an ~800-byte Atom entry) into tables of the same shape in the same database, one
transaction per batch. Ours also validates and encodes each event, and on PostgreSQL takes the
table lock that keeps positions in commit order, draws positions back and sends NOTIFY.
Each batch of ours runs beside the same batch of raw (who goes first alternates), and the
best round of each is kept. Each case then checks what was written: both tables hold every row
once, and the positions ``append`` returned are the stored ones. Prints, last, one ``ratio=``
line per backend (batches of 1,000, target 0.8).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from pubsub_cache.events import encode
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog, _rows
from pubsub_cache.migrations.api import upgrade
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url

from .payloads import publish_events
from .report import BenchFailure, best_rate, print_ratio, print_table

_RAW_TABLE = """CREATE TABLE event_raw (
    position {pk},
    account TEXT NOT NULL, service TEXT NOT NULL, node TEXT NOT NULL,
    type VARCHAR(64) NOT NULL, recorded_at {float} NOT NULL, body {blob} NOT NULL)"""
_RAW_COUNT = "SELECT count(*) FROM event_raw"
_POSITIONS = "SELECT position FROM event ORDER BY position"
_RAW_INSERT = (
    "INSERT INTO event_raw (account, service, node, type, recorded_at, body) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
)


@dataclass(frozen=True)
class Case:
    """One measured configuration: how many events, in batches of what size."""

    batch: int
    events: int


#: The batch size the ratio is taken at, and the ratio to reach there.
TARGET_BATCH = 1000
TARGET = 0.8

QUICK = (Case(1, 300), Case(100, 10_000), Case(1000, 30_000))
FULL = (Case(1, 2_000), Case(100, 50_000), Case(1000, 200_000))


def run(*, quick: bool, postgres_url: str | None, rounds: int = 5) -> dict[str, float]:
    """Run every case on SQLite (and PostgreSQL); print the table; return the ratio by backend."""
    cases = QUICK if quick else FULL
    rows: list[list[object]] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pubsub-cache-bench-") as folder:
        for case in cases:
            ours, raw = _measure_sqlite(Path(folder), case, rounds)
            rows.append(["sqlite", case.batch, case.events, ours, raw, ours / raw])
            if case.batch == TARGET_BATCH:
                ratios["sqlite"] = ours / raw
    if postgres_url:
        for case in cases:
            with scratch_postgres(postgres_url, prefix="bench") as url:
                ours, raw = _measure_postgres(url, case, rounds)
            rows.append(["postgresql", case.batch, case.events, ours, raw, ours / raw])
            if case.batch == TARGET_BATCH:
                ratios["postgresql"] = ours / raw
    print_table(["database", "batch", "events", "ours ev/s", "raw ev/s", "ours/raw"], rows)
    for backend, ratio in ratios.items():
        print_ratio(ratio, TARGET, backend)
    return ratios


def _batches(case: Case, start: int) -> list[list]:  # type: ignore[type-arg]
    events = publish_events(case.events, start=start)
    return [events[i : i + case.batch] for i in range(0, len(events), case.batch)]


def _measure_sqlite(folder: Path, case: Case, rounds: int) -> tuple[float, float]:
    path = folder / f"append-{case.batch}.sqlite3"
    engine = create_engine(sqlite_url(path))
    upgrade(engine)
    log = EventLog(engine)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("PRAGMA synchronous = NORMAL")
    raw.execute(
        _RAW_TABLE.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", float="FLOAT", blob="BLOB")
    )
    insert = _RAW_INSERT.format(p="?")

    def raw_append(batch: list[tuple[object, ...]]) -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(insert, batch)
        raw.execute("COMMIT")

    try:
        rates, positions = _alternate(case, rounds, log.append, raw_append)
        _check(case, rounds, positions, _stored(engine), raw.execute(_RAW_COUNT).fetchone())
        return rates
    finally:
        raw.close()
        log.close()
        engine.dispose()


def _measure_postgres(url: str, case: Case, rounds: int) -> tuple[float, float]:
    import psycopg

    engine = create_engine(url)
    upgrade(engine)
    log = EventLog(engine)
    raw = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    with raw.transaction():
        raw.execute(
            _RAW_TABLE.format(pk="BIGSERIAL PRIMARY KEY", float="DOUBLE PRECISION", blob="BYTEA")
        )
    insert = _RAW_INSERT.format(p="%s")

    def raw_append(batch: list[tuple[object, ...]]) -> None:
        with raw.transaction(), raw.cursor() as cursor:
            cursor.executemany(insert, batch)

    try:
        rates, positions = _alternate(case, rounds, log.append, raw_append)
        _check(case, rounds, positions, _stored(engine), raw.execute(_RAW_COUNT).fetchone())
        return rates
    finally:
        raw.close()
        log.close()
        engine.dispose()


def _stored(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.exec_driver_sql(_POSITIONS).scalars())


def _check(case: Case, rounds: int, returned: list[int], stored: list[int], raw: Any) -> None:
    """A fast wrong answer fails: every row written once, positions as ``append`` said."""
    expected = case.events * rounds
    if len(returned) != expected or sorted(returned) != stored:
        raise BenchFailure(
            f"batch {case.batch}: append returned {len(returned)} positions for {expected} "
            f"events, the log holds {len(stored)} rows, not the same positions"
        )
    if returned != sorted(set(returned)):
        raise BenchFailure(f"batch {case.batch}: positions not increasing in append order")
    if raw is None or raw[0] != expected:
        raise BenchFailure(f"batch {case.batch}: the raw table holds {raw} rows, not {expected}")


def _alternate(
    case: Case,
    rounds: int,
    ours: Callable[[list], list[int]],  # type: ignore[type-arg]
    raw: Callable[[list[tuple[object, ...]]], None],
) -> tuple[tuple[float, float], list[int]]:
    """Best rates of (ours, raw), and every position ``ours`` returned, in call order."""
    ours_rates: list[float] = []
    raw_rates: list[float] = []
    positions: list[int] = []

    def ours_append(batch: list) -> None:  # type: ignore[type-arg]
        positions.extend(ours(batch))

    for number in range(rounds):
        batches = _batches(case, start=number * case.events)
        # The raw side gets the very rows ours would write, encoded ahead of time.
        raw_batches = [_rows(batch, [encode(e) for e in batch]) for batch in batches]
        # Paired: each batch of ours beside the same batch of raw, so that a burst of noise
        # on this shared machine falls on both; who goes first alternates, so that neither
        # side always inherits the other's WAL checkpoint.
        spent = {"ours": 0.0, "raw": 0.0}
        for index, pair in enumerate(zip(batches, raw_batches, strict=True)):
            sides = [("ours", ours_append, pair[0]), ("raw", raw, pair[1])]
            for side, append, batch in sides if (index + number) % 2 == 0 else sides[::-1]:
                start = time.perf_counter()
                append(batch)
                spent[side] += time.perf_counter() - start
        ours_rates.append(case.events / spent["ours"])
        raw_rates.append(case.events / spent["raw"])
    return (best_rate(ours_rates), best_rate(raw_rates)), positions
