"""From an item's raw payload to the columns the read model stores for it.

A payload that cannot be parsed (hostile, malformed, unexpected) is never lost: the raw XML is
kept, ``parsed`` is NULL and ``parse_error`` says why (invariant 8). That holds whatever chose
the parser, and when none could be chosen because the payload itself could not be read: a
payload too large to parse still names its root's namespace (read from its first start tag), so
a node analysed by namespace gets its parser, which then records why it did not parse.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from lxml import etree
from sqlalchemy.engine import Connection, Engine

from pubsub_cache import telemetry
from pubsub_cache.projector.parsers import Parser
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node
from pubsub_cache.projector.search_text import is_derived
from pubsub_cache.projector.xmlsafe import PayloadParseError, parse_payload

#: How much of a payload that does not parse is read to find its root's namespace (characters).
SNIFF_CHARACTERS = 65_536


@dataclass(frozen=True, slots=True)
class PayloadColumns:
    """What one payload contributes to its ``pubsub_item`` row."""

    parsed: str | None
    """The parser's data as JSON text, ready for the ``parsed`` column."""
    text: str | None
    parse_error: str | None
    published: datetime | None
    text_derived: bool = False
    """Whether the parsed JSON gives ``text`` back (``projector/search_text.py``): then SQLite
    stores none. Told only when asked for (``derive_text``); ``False`` otherwise."""


NOT_PARSED = PayloadColumns(None, None, None, None)


def content_digest(payload: str, parser: str | None, parser_version: int | None) -> bytes:
    """The 16-byte digest naming a ``pubsub_content`` row: the payload as ``parser`` at
    ``parser_version`` reads it. Each part is length-prefixed (``None`` has its own mark), so
    no two distinct triples hash the same bytes by concatenation."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (parser, None if parser_version is None else str(parser_version), payload):
        if part is None:
            digest.update(b"\xff" * 8)
            continue
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class ParseCache:
    """The columns of the last few contents parsed, by digest: the N views of one public node
    receive the same payload N times, and it is parsed once (the digest names the parser and
    its version too, so an entry is valid for whoever asks with that digest)."""

    def __init__(self, size: int = 256, *, derive_text: bool = False) -> None:
        """``derive_text``: tell :attr:`PayloadColumns.text_derived` (a SQLite read model)."""
        self._size = size
        self._derive_text = derive_text
        self._entries: OrderedDict[bytes, PayloadColumns] = OrderedDict()

    def columns(self, digest: bytes, payload: str, parser: Parser | None) -> PayloadColumns:
        """``parse_columns(payload, parser)``, from the cache when ``digest`` was parsed."""
        found = self._entries.get(digest)
        if found is not None:
            self._entries.move_to_end(digest)
            return found
        found = parse_columns(payload, parser, derive_text=self._derive_text)
        self._entries[digest] = found
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return found


def payload_namespace(payload: str | None) -> str | None:
    """The namespace of the payload's root element, or ``None`` if it has none or is unreadable.

    A payload that does not parse (too large, malformed further on) is read up to its root's
    start tag only, so that the analyser matching its namespace still chooses the parser.
    """
    if payload is None:
        return None
    try:
        root = parse_payload(payload)
    except PayloadParseError:
        return _sniff_namespace(payload)
    return etree.QName(root).namespace


def _sniff_namespace(payload: str) -> str | None:
    # Payloads are elements (the ingest serialises them without a prolog): anything before the
    # root start tag (a declaration, a DOCTYPE, a comment) is not read at all, so no DTD ever
    # reaches libxml2; the pull parser stops at the first start tag of a bounded prefix.
    head = payload[:SNIFF_CHARACTERS].lstrip()
    if not head.startswith("<") or head.startswith(("<!", "<?")):
        return None
    parser = etree.XMLPullParser(
        events=("start",),
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
    )
    try:
        parser.feed(head.encode("utf-8", "replace"))
        for _event, element in parser.read_events():
            if isinstance(element, etree._Element):
                return etree.QName(element).namespace
    except etree.XMLSyntaxError:
        return None
    return None


def parse_columns(
    payload: str | None, parser: Parser | None, *, derive_text: bool = False
) -> PayloadColumns:
    """Parse ``payload`` with ``parser``; failures become ``parse_error``, never exceptions
    (and are counted by the telemetry).

    Without a parser the payload is still read (with the same limits): one that cannot be read
    gets the reason as its parse error, since that is also why no analyser could choose one.
    """
    columns = _parse_columns(payload, parser, derive_text)
    if columns.parse_error is not None:
        telemetry.current().parse_failed()
    return columns


def _parse_columns(payload: str | None, parser: Parser | None, derive_text: bool) -> PayloadColumns:
    if payload is None:
        return NOT_PARSED
    if parser is None:
        try:
            parse_payload(payload)
        except PayloadParseError as exc:
            return PayloadColumns(None, None, f"no parser could be chosen: {exc}", None)
        return NOT_PARSED
    try:
        result = parser.parse(parse_payload(payload))
    except PayloadParseError as exc:
        return PayloadColumns(None, None, str(exc), None)
    except Exception as exc:
        # A parser bug (third-party ones included) must not stop the projector or park the
        # event: the payload stays, the error is recorded.
        return PayloadColumns(None, None, f"{parser.name} failed: {exc!r}", None)
    try:
        parsed = _json_text(result.data)
    except (TypeError, msgspec.EncodeError) as exc:
        return PayloadColumns(None, None, f"{parser.name} returned non-JSON data: {exc}", None)
    derived = derive_text and is_derived(result.text, result.data)
    return PayloadColumns(parsed, result.text or None, None, result.published, derived)


def _json_text(value: dict[str, Any]) -> str:
    return msgspec.json.encode(value).decode()


def parse_error_count(connectable: Engine | Connection, account: str | None = None) -> int:
    """How many cached items carry a parse error (of ``account``, or of every account)."""
    query = (
        sa.select(sa.func.count())
        .select_from(pubsub_item)
        .join(pubsub_content, pubsub_content.c.id == pubsub_item.c.content_id)
        .where(pubsub_content.c.parse_error.is_not(None))
    )
    if account is not None:
        query = query.join(pubsub_node, pubsub_node.c.id == pubsub_item.c.node_id).where(
            pubsub_node.c.account == account
        )
    if isinstance(connectable, Connection):
        return int(connectable.execute(query).scalar_one())
    with connectable.connect() as connection:
        return int(connection.execute(query).scalar_one())
