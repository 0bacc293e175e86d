"""The daemon's telemetry: what :mod:`pubsub_cache.telemetry` is told, kept as prometheus_client
counters and histograms on a registry (:func:`~.metrics.serve_metrics` builds one per endpoint and
installs this while it serves).

Imported by the metrics endpoint only: one-shot commands and the query library never load
prometheus_client. Each method runs once per batch or per notification; the labelled children
are kept, so that a call is a dict lookup and an increment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from pubsub_cache import telemetry

Child = TypeVar("Child", Counter, Histogram)


class PrometheusTelemetry(telemetry.Telemetry):
    """Counts and times what this process does, on ``registry``."""

    enabled = True

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(f"pubsub_cache_{name}", documentation, labels, registry=registry)

        self._appended = _Children(
            counter("events_appended", "Events appended to the log by this process.", "type")
        )
        self._accepted = counter(
            "notifications_accepted", "Events taken from notifications received."
        )
        self._rejected = _Children(
            counter("notifications_rejected", "Notification parts refused, by reason.", "reason")
        )
        self._projected = _Children(
            counter("events_projected", "Events applied by the projector.", "projector")
        )
        self._items = _Children(
            counter(
                "items_projected",
                "Items applied by the projector, published or synced.",
                "projector",
            )
        )
        self._parked = _Children(
            counter("events_parked", "Events parked by the projector.", "projector")
        )
        self._parse_failures = counter(
            "payload_parse_failures", "Payloads that could not be parsed (kept raw)."
        )
        self._syncs = _Children(counter("syncs", "Syncs ended, by outcome.", "outcome"))
        self._reconnects = _Children(
            counter("reconnects", "Connections tried again, per account.", "account")
        )
        self._live = _Children(
            counter("live_fallbacks", "Reads the cache could not answer, sent live.", "read")
        )
        self._batch_seconds = _Children(
            Histogram(
                "pubsub_cache_projector_batch_seconds",
                "Time to apply one projector batch.",
                ["projector"],
                registry=registry,
            )
        )
        self._latency = Histogram(
            "pubsub_cache_publish_to_projected_seconds",
            "From a publication's observation by the ingest to its application.",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self._query_seconds = _Children(
            Histogram(
                "pubsub_cache_query_seconds",
                "Time to read the cache, by read.",
                ["read"],
                registry=registry,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            )
        )

    def appended(self, counts: Mapping[str, int]) -> None:
        for event_type, count in counts.items():
            self._appended.get(event_type).inc(count)

    def notified(self, accepted: int, rejected: Sequence[str]) -> None:
        if accepted:
            self._accepted.inc(accepted)
        for reason in rejected:
            self._rejected.get(reason).inc()

    def projected(
        self, projector: str, *, seconds: float, events: int, items: int, latencies: Sequence[float]
    ) -> None:
        self._batch_seconds.get(projector).observe(seconds)
        self._projected.get(projector).inc(events)
        if items:
            self._items.get(projector).inc(items)
        for latency in latencies:
            self._latency.observe(latency)

    def parked(self, projector: str, count: int) -> None:
        self._parked.get(projector).inc(count)

    def parse_failed(self) -> None:
        self._parse_failures.inc()

    def synced(self, state: str) -> None:
        self._syncs.get(state).inc()

    def reconnecting(self, account: str) -> None:
        self._reconnects.get(account).inc()

    def went_live(self, read: str) -> None:
        self._live.get(read).inc()

    def queried(self, read: str, seconds: float) -> None:
        self._query_seconds.get(read).observe(seconds)


class _Children(Generic[Child]):
    """A metric's labelled children, kept: ``labels()`` takes a lock and builds a tuple."""

    def __init__(self, metric: Child) -> None:
        self._metric: Child = metric
        self._children: dict[str, Child] = {}

    def get(self, value: str) -> Child:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child
