"""From an item's raw payload to the columns the read model stores for it.

A payload that cannot be parsed (hostile, malformed, unexpected) is never lost: the raw XML is
kept, ``parsed`` is NULL and ``parse_error`` says why (invariant 8).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from lxml import etree

from pubsub_cache.projector.parsers import Parser
from pubsub_cache.projector.xmlsafe import PayloadParseError, parse_payload


@dataclass(frozen=True, slots=True)
class PayloadColumns:
    """What one payload contributes to its ``pubsub_item`` row."""

    parsed: str | None
    """The parser's data as JSON text, ready for the ``parsed`` column."""
    text: str | None
    parse_error: str | None
    published: datetime | None


NOT_PARSED = PayloadColumns(None, None, None, None)


def payload_hash(payload: str | None) -> str | None:
    """A digest identifying the payload, to tell a re-publication from a changed item."""
    if payload is None:
        return None
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def payload_namespace(payload: str | None) -> str | None:
    """The namespace of the payload's root element, or ``None`` if it has none or is unreadable."""
    if payload is None:
        return None
    try:
        root = parse_payload(payload)
    except PayloadParseError:
        return None
    return etree.QName(root).namespace


def parse_columns(payload: str | None, parser: Parser | None) -> PayloadColumns:
    """Parse ``payload`` with ``parser``; failures become ``parse_error``, never exceptions."""
    if payload is None or parser is None:
        return NOT_PARSED
    try:
        result = parser.parse(parse_payload(payload))
    except PayloadParseError as exc:
        return PayloadColumns(None, None, str(exc), None)
    except (ValueError, TypeError, AttributeError) as exc:
        # A parser bug must not stop the projector: the payload stays, the error is recorded.
        return PayloadColumns(None, None, f"{parser.name} failed: {exc!r}", None)
    try:
        parsed = _json_text(result.data)
    except (TypeError, msgspec.EncodeError) as exc:
        return PayloadColumns(None, None, f"{parser.name} returned non-JSON data: {exc}", None)
    return PayloadColumns(parsed, result.text or None, None, result.published)


def _json_text(value: dict[str, Any]) -> str:
    return msgspec.json.encode(value).decode()
