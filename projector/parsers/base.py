"""What every payload parser returns and promises, and the XEP-0082 date-time reader they share.

A parser turns the root element of one item payload (already parsed by
:func:`pubsub_cache.projector.xmlsafe.parse_payload`) into a :class:`ParsedPayload`: JSON-ready
data for the ``parsed`` column, plain text for full-text search, and the publication/update
times the payload claims. Parsers are stateless and may be shared between threads.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from lxml import etree

from pubsub_cache.projector.xmlsafe import PayloadParseError

__all__ = [
    "XML_LANG",
    "ParsedPayload",
    "Parser",
    "expect_root",
    "parse_xep0082_datetime",
    "to_finite_float",
    "to_int",
]

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class ParsedPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The result of parsing one payload."""

    data: dict[str, Any]
    """JSON-serialisable fields; stored in the ``parsed`` column."""
    text: str = ""
    """Plain text for full-text search; never markup."""
    published: datetime | None = None
    """When the payload says it was published (timezone-aware, UTC)."""
    updated: datetime | None = None
    """When the payload says it was last updated (timezone-aware, UTC)."""


class Parser(Protocol):
    """Turns one payload root element into a :class:`ParsedPayload`.

    ``name`` is a stable id (``"xep-0277"``) and ``version`` increases whenever the output
    changes, so the projector knows which stored rows a replay would change.

    A parser may also declare ``searchable``: a tuple of paths into ``data`` (the search path
    grammar, ``author.name``) that search answers from an index. The built-in parsers'
    declarations make :data:`~pubsub_cache.projector.parsers.SEARCHABLE_PATHS`; changing them
    takes a migration that re-creates the index triggers (``projector/schema.py``).

    It may declare ``text_keys`` too: the top-level keys of ``data`` whose strings its text is
    made of. The built-in parsers' declarations make
    :data:`~pubsub_cache.projector.parsers.TEXT_KEYS`; on SQLite a text that is exactly those
    strings is not stored but derived from ``data`` (``projector/search_text.py``). Any parser
    gets its text searched either way: one that is not those strings is stored as it is.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def namespace(self) -> str:
        """The namespace of the payload root elements this parser reads."""
        ...

    def parse(self, element: etree._Element) -> ParsedPayload:
        """Parse ``element``; raise :class:`PayloadParseError` on content it cannot interpret."""
        ...


def expect_root(element: etree._Element, tag: str, *others: str) -> str:
    """Return the root's Clark tag if it is one of the expected ones, else raise."""
    found = element.tag
    if found == tag or found in others:
        return str(found)
    expected = ", ".join((tag, *others))
    raise PayloadParseError("unexpected-root", f"expected {expected}, got {found!r}")


def parse_xep0082_datetime(value: str | None) -> datetime | None:
    """Read an XEP-0082 DateTime (``CCYY-MM-DDThh:mm:ss[.sss]TZD``) as an aware UTC datetime.

    Tolerant of what clients actually send: any number of fractional digits (truncated to
    microseconds), ``Z`` or a numeric offset, surrounding whitespace. A stamp without an offset is
    taken as UTC (the legacy XEP-0091 format was UTC). Anything else, including a date without a
    time, gives ``None``: a bad date must never make a whole payload unparseable.
    """
    if not value:
        return None
    text = value.strip()
    # fromisoformat also accepts a bare date or the basic format; require "date T hh:mm" (XEP-0080's
    # own example omits the seconds).
    if len(text) < 16 or text[10] not in "Tt":
        return None
    if text[-1] in "zZ":  # RFC 3339 allows a lower-case "z"; fromisoformat does not
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    try:
        return stamp.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        return None


def to_int(value: str | None) -> int | None:
    """An integer attribute or element text, or ``None`` when absent or not an integer."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def to_finite_float(value: str | None) -> float | None:
    """A decimal as a float, or ``None`` when absent, garbage, infinite or NaN (not JSON)."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
