"""Errors of the events package."""

from __future__ import annotations

from pubsub_cache.errors import PubsubCacheError


class InvalidEvent(PubsubCacheError, ValueError):
    """Raised when an event does not satisfy its schema (an empty JID, a naive time, ...).

    Events are checked when they are built, so an invalid one never reaches the log. It is a
    ``ValueError`` so that msgspec reports it as a validation error when decoding.
    """

    def __init__(self, kind: str, reason: str, *, index: int | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.index = index
        where = f" (event {index} of the batch)" if index is not None else ""
        super().__init__(f"invalid {kind} event{where}: {reason}")


class UndecodableEvent(PubsubCacheError):
    """Raised when stored bytes do not decode to any known event type."""

    def __init__(self, reason: str, *, position: int | None = None) -> None:
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"cannot decode the event{where}: {reason}")
