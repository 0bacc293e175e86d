"""Encoding of events: msgpack in the log, JSON for export and humans; one reusable decoder each."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from pubsub_cache.errors import PubsubCacheError

from .types import AnyEvent, Event, event_tag


class InvalidEvent(PubsubCacheError):
    """Raised when an event does not satisfy its schema (a missing field, a naive time, ...)."""

    def __init__(self, event: object, reason: str, *, index: int | None = None) -> None:
        self.event = event
        self.reason = reason
        self.index = index
        where = f" (event {index} of the batch)" if index is not None else ""
        kind = event_tag(event) if isinstance(event, Event) else type(event).__name__
        super().__init__(f"invalid {kind} event{where}: {reason}")


class UndecodableEvent(PubsubCacheError):
    """Raised when stored bytes do not decode to any known event type."""

    def __init__(self, reason: str, *, position: int | None = None) -> None:
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"cannot decode the event{where}: {reason}")


_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder: msgspec.msgpack.Decoder[AnyEvent] = msgspec.msgpack.Decoder(AnyEvent)
_json_encoder = msgspec.json.Encoder()
_json_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """The bytes stored in the log for ``event``."""
    return _msgpack_encoder.encode(event)


def decode(data: bytes, *, position: int | None = None) -> AnyEvent:
    """The event stored as ``data``; raises :class:`UndecodableEvent`."""
    try:
        return _msgpack_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise UndecodableEvent(str(exc), position=position) from exc


def encode_json(event: Event) -> bytes:
    """``event`` as one line of JSON (no newline)."""
    return _json_encoder.encode(event)


def decode_json(data: bytes | str, *, position: int | None = None) -> AnyEvent:
    """The event written by :func:`encode_json`; raises :class:`UndecodableEvent`."""
    try:
        return _json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise UndecodableEvent(str(exc), position=position) from exc


def encode_valid(events: Iterable[Event]) -> list[bytes]:
    """Encode every event, checking each against its schema first.

    msgspec checks constraints when decoding, not when a Struct is built, so each event is
    round-tripped through the decoder. Raises :class:`InvalidEvent` naming the first bad one,
    before anything is returned: a caller writes a batch entirely or not at all.
    """
    encoded: list[bytes] = []
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidEvent(event, "not an event", index=index)
        try:
            data = _msgpack_encoder.encode(event)
            _msgpack_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as exc:
            raise InvalidEvent(event, str(exc), index=index) from exc
        encoded.append(data)
    return encoded
