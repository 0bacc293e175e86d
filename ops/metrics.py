"""Prometheus metrics of the daemons, built with prometheus_client on a registry of their own.

Two kinds of figures share one registry:

- what the database says (the log's head, each checkpoint's lag, nodes by sync state, each
  account's state...), read at every scrape by :class:`StatusCollector` through the same
  :func:`~pubsub_cache.projector.status.read_status` as ``pubsub-cache status``, so whichever
  process (ingest, projector) serves them tells the truth;
- what this process saw happen (events appended, notifications, syncs, reconnects, batch
  timings...), counted by :class:`~.telemetry.PrometheusTelemetry`, which :func:`serve_metrics`
  installs as the process's :mod:`pubsub_cache.telemetry` while it serves.

A registry per server, never prometheus_client's global one: several daemons in one test process
must not collide. The exposition is prometheus_client's own (escaping, HELP and TYPE lines); the
listener is anyio's, so that nothing outlives the daemon's task group.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import anyio
import anyio.to_thread
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from pubsub_cache import telemetry
from pubsub_cache.events.outage import UNAVAILABLE, Outage
from pubsub_cache.projector.status import Status, read_status

from .telemetry import PrometheusTelemetry

log = logging.getLogger(__name__)

#: The states an account's ingest can be in, each a series of ``pubsub_cache_account_state``
#: (``stale``: recorded as served by a process that no longer holds the account's lease;
#: ``unknown``: cached, or with events, but recorded by no ingest daemon).
ACCOUNT_STATES = ("connecting", "connected", "standing-by", "failed", "stopped", "stale", "unknown")


class StatusCollector(Collector):
    """The figures of ``pubsub-cache status``, read afresh at each scrape."""

    def __init__(self, read: Callable[[], Status]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        """The families without reading the database (the registry checks names with it)."""
        return list(
            families(Status(head=0, checkpoints=[], parked=0, nodes={}, items=0, rejected=0))
        )

    def collect(self) -> Iterator[Metric]:
        """The families, read afresh."""
        return families(self._read())


def families(status: Status) -> Iterator[Metric]:
    """One family per figure of ``status``; the names are those dashboards were built on."""
    yield _gauge("log_head", "Highest position in the event log.", status.head)
    points = [([point.name], point) for point in status.checkpoints]
    yield _gauges(
        "checkpoint_position",
        "Position each projector has applied up to.",
        ["name"],
        [(labels, point.position) for labels, point in points],
    )
    yield _gauges(
        "lag_events",
        "Events not applied yet, per projector.",
        ["name"],
        [(labels, point.lag_events) for labels, point in points],
    )
    yield _gauges(
        "lag_seconds",
        "Age of the oldest event not applied yet, per projector.",
        ["name"],
        [(labels, point.lag_seconds) for labels, point in points],
    )
    yield _gauges(
        "nodes",
        "Cached nodes by sync state.",
        ["state"],
        [([state], count) for state, count in status.nodes.items()],
    )
    yield _gauge("items", "Items in the cache.", status.items)
    yield _gauge("parked_events", "Events parked by the projectors.", status.parked)
    rejected = CounterMetricFamily(
        "pubsub_cache_rejected_notifications",
        "Notification parts refused (as spoofed or malformed), as counted by the projector.",
    )
    rejected.add_metric([], status.rejected)
    yield rejected
    yield _gauge(
        "parse_errors", "Cached items whose payload could not be parsed.", status.parse_errors
    )
    yield _gauges(
        "account_state",
        "Each account's ingest: 1 for its current state.",
        ["account", "state"],
        [
            ([account.account, state], int(account.state == state))
            for account in status.accounts
            for state in ACCOUNT_STATES
        ],
    )
    yield _gauges(
        "account_state_since",
        "Unix time each account entered its state.",
        ["account"],
        [
            ([account.account], account.since)
            for account in status.accounts
            if account.since is not None
        ],
    )
    yield _gauges(
        "account_nodes",
        "Each account's cached nodes by sync state.",
        ["account", "state"],
        [
            ([account.account, state], count)
            for account in status.accounts
            for state, count in account.nodes.items()
        ],
    )
    yield _gauges(
        "account_items",
        "Items cached for each account.",
        ["account"],
        [([account.account], account.items) for account in status.accounts],
    )
    yield _gauges(
        "account_lag_events",
        "Each account's events not applied yet (past the lowest projector checkpoint).",
        ["account"],
        [([account.account], account.lag_events) for account in status.accounts],
    )
    yield _gauges(
        "account_lag_seconds",
        "Age of each account's oldest event not applied yet.",
        ["account"],
        [([account.account], account.lag_seconds) for account in status.accounts],
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"pubsub_cache_{name}", documentation, value=value)


def _gauges(
    name: str, documentation: str, labels: list[str], values: Sequence[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"pubsub_cache_{name}", documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def metrics_registry(read: Callable[[], Status]) -> tuple[CollectorRegistry, PrometheusTelemetry]:
    """A new registry with the status figures (from ``read``), the process's own (CPU, memory,
    open files, Python version) and a telemetry counting on it."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatusCollector(read))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry, PrometheusTelemetry(registry)


def render(status: Status) -> str:
    """``status`` as Prometheus text (the status figures only)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatusCollector(lambda: status))
    return generate_latest(registry).decode()


async def serve_metrics(
    engine: Engine,
    port: int,
    host: str = "127.0.0.1",
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP request on ``host:port`` with the metrics; runs until cancelled, with
    its telemetry installed meanwhile. ``started`` with the port (``port`` 0: one is chosen).

    While the database is away, scrapes get ``503 Service Unavailable`` (one warning per
    outage): a request must never take the daemon down with it.
    """

    def read() -> Status:
        with engine.connect() as connection:
            return read_status(connection, now=time.time())

    registry, counting = metrics_registry(read)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    outage = Outage("metrics", log, delay=lambda _attempt: 0.0)

    async def handle(stream: SocketStream) -> None:
        # The listener's task group runs this: an exception escaping would stop the daemon.
        async with stream:
            with anyio.move_on_after(5), contextlib.suppress(*_GONE):
                await stream.receive(4096)  # the request itself does not matter
                try:
                    body = await anyio.to_thread.run_sync(generate_latest, registry)
                except UNAVAILABLE as exc:
                    outage.failed(exc)
                    await stream.send(_response("503 Service Unavailable", _DOWN))
                    return
                outage.ended()
                await stream.send(_response("200 OK", body))

    previous = telemetry.install(counting)
    try:
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(handle)
    finally:
        if telemetry.current() is counting:
            telemetry.install(previous)


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


#: The body of a scrape while the database is away.
_DOWN = b"# the database is unavailable\n"

#: A client that went away before its answer: nothing to do.
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
