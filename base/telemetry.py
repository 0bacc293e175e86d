"""What the running program counts and times, told where it happens, kept by whoever installed
a real :class:`Telemetry` (the daemons' ``/metrics``: :mod:`pubsub_cache.ops.metrics`).

The default one does nothing, so the query library in a client program, one-shot commands and
tests run without any registry. This module imports nothing beyond the standard library: every
layer imports it, and a cached ``pubsub-cache get`` must not load prometheus_client (its start-up
is measured by ops/bench/cli.py). Call sites tell once per batch, never once per row, and test
:attr:`Telemetry.enabled` before computing anything only a real one would read.

One telemetry per process: :func:`install` swaps it (the daemon's metrics endpoint installs its
own while it serves) and :func:`current` reads it, one global lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Telemetry:
    """The no-op telemetry; a real one overrides every method."""

    enabled = False
    """Whether anything is kept: call sites skip work that only feeds the telemetry when not."""

    def appended(self, counts: Mapping[str, int]) -> None:
        """Events appended to the log, by event type, in one transaction."""

    def notified(self, accepted: int, rejected: Sequence[str]) -> None:
        """One notification: how many events it gave, and the kind of each part refused."""

    def projected(
        self, projector: str, *, seconds: float, events: int, items: int, latencies: Sequence[float]
    ) -> None:
        """One projector batch applied in ``seconds``: events and items (published or synced)
        applied, and for each publication the seconds from its observation to now."""

    def parked(self, projector: str, count: int) -> None:
        """Events ``projector`` parked in one batch."""

    def parse_failed(self) -> None:
        """A payload could not be parsed (it is kept raw)."""

    def synced(self, state: str) -> None:
        """A sync ended in ``state`` (``COMPLETED``, ``PARTIAL``, ``ERROR``, ``DELETED``)."""

    def reconnecting(self, account: str) -> None:
        """``account``'s ingest connects again after a failure or a lost session."""

    def went_live(self, read: str) -> None:
        """A read (``items``, ``item``) the cache could not answer went to the service."""

    def queried(self, read: str, seconds: float) -> None:
        """A read of the cache took ``seconds``."""


_NONE = Telemetry()
_current: Telemetry = _NONE


def current() -> Telemetry:
    """The telemetry installed in this process (the no-op one by default)."""
    return _current


def install(telemetry: Telemetry | None) -> Telemetry:
    """Make ``telemetry`` (``None``: the no-op one) the current one; returns the previous."""
    global _current
    previous, _current = _current, telemetry or _NONE
    return previous
