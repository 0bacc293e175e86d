"""Encoding of events: msgpack in the log, JSON for export and humans; one reusable decoder each."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .errors import InvalidEvent, UndecodableEvent
from .types import AnyEvent, Event

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


def encode_valid(events: Sequence[object]) -> list[bytes]:
    """Encode a batch for the log, refusing anything that is not an event.

    Field constraints were checked when each event was built (``Event.__post_init__``), so
    this only guards against foreign objects. Raises :class:`InvalidEvent` naming the first
    bad one before anything is returned: a caller writes a batch entirely or not at all.
    """
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidEvent(type(event).__name__, "not an event", index=index)
    return [_msgpack_encoder.encode(event) for event in events]
