"""``pubsub-cache bench ...``: benchmarks that print figures and ratios against a reference
measured in the same run (never timed assertions in tests: these machines are noisy)."""

from __future__ import annotations

import os

import click

from pubsub_cache.ops.cli import Lazy, LazyGroup

_POSTGRES = click.option(
    "--postgres-url",
    envvar="PUBSUB_CACHE_BENCH_POSTGRES_URL",
    default=None,
    help="Also measure on this PostgreSQL database (a scratch schema is created and dropped).",
)
_QUICK = click.option("--quick", is_flag=True, help="A smaller run that finishes within 60 s.")


@click.group(
    cls=LazyGroup,
    lazy={
        "ingest": Lazy(
            "pubsub_cache.ops.bench.ingest:ingest",
            "Notifications absorbed per second and publish-to-read-model latency, on SQLite.",
        )
    },
)
def bench() -> None:
    """Benchmarks: a table, then `ratio=... target=...` as the last line."""


@bench.command()
@_QUICK
@_POSTGRES
def append(quick: bool, postgres_url: str | None) -> None:
    """Event-log appends beside raw executemany of the same rows."""
    from .append import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench append FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
def project(quick: bool, postgres_url: str | None) -> None:
    """Projection of XEP-0277 items beside raw parse + upsert and the eventsourcing library."""
    from .project import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench project FAILED: {exc}") from exc


@bench.command()
@_QUICK
@click.option("--events", type=int, help="How many events (default: 1M, or 20k with --quick).")
def replay(quick: bool, events: int | None) -> None:
    """Rebuild from the log (rate, peak RSS) beside the projector's rate on the same log."""
    from .replay import run

    run(quick=quick, events=events)


@bench.command("cli")
@_QUICK
def cli_startup(quick: bool) -> None:
    """Start-up of a cached `get` and of `--help` beside the imports they need."""
    from .startup import run

    run(quick=quick)


@bench.command()
@_QUICK
@_POSTGRES
def read(quick: bool, postgres_url: str | None) -> None:
    """Cached get_items (20 newest of 100k) beside raw SQL and a live Prosody read; search."""
    from .read import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench read FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
@click.option(
    "--items", type=int, help="Items in the node (default: 10,000, or 2,000 with --quick)."
)
@click.option("--repeat", type=int, help="Repetitions of every case (default: 3 to 10 by case).")
def reconcile(quick: bool, postgres_url: str | None, items: int | None, repeat: int | None) -> None:
    """Reconciling a node (ids only) beside a full re-fetch, on Prosody and ejabberd."""
    from .reconcile import BenchFailure, run

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, items=items, repeat=repeat, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench reconcile FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
def search(quick: bool, postgres_url: str | None) -> None:
    """Search growth (field, tags, rare and common word) from 2k to 200k and 1M items."""
    from .report import BenchFailure
    from .search import run

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench search FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
def accounts(quick: bool, postgres_url: str | None) -> None:
    """Many accounts in one daemon: connect time, RSS each, fan-out latency and CPU."""
    from .accounts import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench accounts FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
def fanout(quick: bool, postgres_url: str | None) -> None:
    """What a node fanned out to 1, 10 and 200 views costs the log and the read model."""
    from .fanout import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url)
    except BenchFailure as exc:
        raise SystemExit(f"bench fanout FAILED: {exc}") from exc


@bench.command()
@_QUICK
@_POSTGRES
@click.option("--items", type=int, help="Items to store (default: 50,000, or 5,000 with --quick).")
def disk(quick: bool, postgres_url: str | None, items: int | None) -> None:
    """Bytes per item on disk (log, items, JSON, full text, keys) beside the logical row."""
    from .disk import run
    from .report import BenchFailure

    url = postgres_url or os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    try:
        run(quick=quick, postgres_url=url, items=items)
    except BenchFailure as exc:
        raise SystemExit(f"bench disk FAILED: {exc}") from exc
