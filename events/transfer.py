"""Streaming the log out and in (``pubsub-cache log export|import``): NDJSON or msgpack.

NDJSON: one ``{"position", "recorded_at", "event"}`` object per line, the event in its JSON form
(readable, greppable). msgpack: the same records, each prefixed by its length (4 bytes, big
endian), the event carried as its stored bytes. Both stream in batches: memory stays flat.

An event that cannot be decoded (a row written by a buggy version, or forced in by hand) is left
out and reported, with its position and error, to ``on_undecodable``: one bad row never stops the
export of the rest (invariant 11), and every exported record can be imported.

Import keeps positions, so a read model rebuilt from an imported log equals the original one
(rows record the positions that created them). It refuses positions the target already used.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal, cast

import msgspec
from sqlalchemy.engine import Engine

from pubsub_cache.errors import PubsubCacheError

from .codec import decode, encode
from .db import is_sqlite, write_transaction
from .errors import UndecodableEvent
from .log import CHANNEL, EventLog, RawRecord, head_in
from .schema import event_table
from .types import AnyEvent, event_scope, event_tag

Format = Literal["ndjson", "msgpack"]
Progress = Callable[[int, int], None]
OnUndecodable = Callable[[UndecodableEvent], None]
_LENGTH = struct.Struct(">I")
log = logging.getLogger(__name__)


class ImportConflict(PubsubCacheError):
    """Raised when an imported event would reuse a position the target log already holds."""

    def __init__(self, position: int, head: int) -> None:
        super().__init__(
            f"cannot import the event at position {position}: the target log already reaches "
            f"position {head}, and positions are never reused (import into an empty database)"
        )


class MalformedExport(PubsubCacheError):
    """Raised when an export file cannot be read (with the record number)."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"record {number} of the export is malformed: {reason}")


class ExportedEvent(msgspec.Struct, frozen=True):
    """One record of an NDJSON export."""

    position: int
    recorded_at: float
    event: AnyEvent


class _PackedEvent(msgspec.Struct, frozen=True, array_like=True):
    position: int
    recorded_at: float
    body: bytes


def format_for(path: str, given: str | None) -> Format:
    """The format named by ``given``, else guessed from the file name (NDJSON by default)."""
    if given in ("ndjson", "msgpack"):
        return cast(Format, given)
    return "msgpack" if path.endswith((".msgpack", ".mpk")) else "ndjson"


def export_log(
    log: EventLog,
    out: BinaryIO,
    *,
    fmt: Format,
    batch: int = 5000,
    progress: Progress | None = None,
    on_undecodable: OnUndecodable | None = None,
) -> int:
    """Write every decodable event of ``log`` to ``out``; returns how many.

    Each undecodable row is left out and passed to ``on_undecodable`` (default: logged).
    """
    report = on_undecodable or _log_undecodable
    head = log.head()
    json_encoder = msgspec.json.Encoder()
    pack = msgspec.msgpack.Encoder().encode
    count = after = 0
    while True:
        records = log.read_raw(after=after, limit=batch)
        if not records:
            return count
        chunk = bytearray()
        for record in records:
            try:
                event = decode(record.body, position=record.position)
            except UndecodableEvent as exc:
                report(exc)
                continue
            count += 1
            if fmt == "ndjson":
                exported = ExportedEvent(record.position, record.recorded_at, event)
                chunk += json_encoder.encode(exported) + b"\n"
            else:
                packed = pack(_PackedEvent(record.position, record.recorded_at, record.body))
                chunk += _LENGTH.pack(len(packed)) + packed
        out.write(chunk)
        after = records[-1].position
        if progress is not None:
            progress(after, head)


def read_export(stream: BinaryIO, *, fmt: Format) -> Iterator[RawRecord]:
    """The records of an export, checked: each event must decode."""
    if fmt == "ndjson":
        decoder = msgspec.json.Decoder(ExportedEvent)
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise MalformedExport(number, str(exc)) from None
            yield _raw(record.position, record.recorded_at, record.event)
        return
    unpack = msgspec.msgpack.Decoder(_PackedEvent).decode
    number = 0
    while header := stream.read(_LENGTH.size):
        number += 1
        if len(header) < _LENGTH.size:
            raise MalformedExport(number, "truncated length prefix")
        (size,) = _LENGTH.unpack(header)
        data = stream.read(size)
        try:
            packed = unpack(data)
            event = decode(packed.body, position=packed.position)
        except (msgspec.DecodeError, PubsubCacheError) as exc:
            raise MalformedExport(number, str(exc)) from None
        yield _raw(packed.position, packed.recorded_at, event)


def import_log(engine: Engine, records: Iterator[RawRecord], *, batch: int = 2000) -> int:
    """Append exported records keeping their positions; returns how many were imported."""
    count = 0
    while True:
        chunk = [record for _, record in zip(range(batch), records, strict=False)]
        if not chunk:
            return count
        with write_transaction(engine) as connection:
            if not is_sqlite(connection):
                connection.exec_driver_sql("LOCK TABLE event IN EXCLUSIVE MODE")
            head = head_in(connection)
            if chunk[0].position <= head:
                raise ImportConflict(chunk[0].position, head)
            connection.execute(event_table.insert(), [msgspec.structs.asdict(r) for r in chunk])
            if not is_sqlite(connection):
                # Explicit positions bypass the sequence: move it past them.
                connection.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence('event', 'position'), "
                    f"GREATEST((SELECT max(position) FROM event), {chunk[-1].position}))"
                )
                connection.exec_driver_sql(f"NOTIFY {CHANNEL}")
        count += len(chunk)


def _log_undecodable(error: UndecodableEvent) -> None:
    log.warning("left out of the export: %s", error, extra={"position": error.position})


def _raw(position: int, recorded_at: float, event: AnyEvent) -> RawRecord:
    service, node = event_scope(event)
    return RawRecord(
        position, event.account, service, node, event_tag(event), recorded_at, encode(event)
    )
