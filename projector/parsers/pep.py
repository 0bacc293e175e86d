"""Parsers for the common PEP payloads: avatar metadata, geolocation, tune and bookmarks.

Each payload is small and flat; the parsers keep the element/attribute names of the XEPs as data
keys so a reader of the ``parsed`` column can check them against the specification. An empty
element (``<tune/>``, ``<geoloc/>``, ``<metadata/>``) is how a user stops publishing; it parses to
empty values, not to an error.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from pubsub_cache.projector.parsers.base import (
    XML_LANG,
    ParsedPayload,
    expect_root,
    parse_xep0082_datetime,
    to_finite_float,
    to_int,
)

__all__ = [
    "AVATAR_METADATA_NS",
    "BOOKMARKS_NS",
    "GEOLOC_NS",
    "TUNE_NS",
    "AvatarMetadataParser",
    "BookmarksParser",
    "GeolocParser",
    "TuneParser",
]

AVATAR_METADATA_NS = "urn:xmpp:avatar:metadata"
GEOLOC_NS = "http://jabber.org/protocol/geoloc"
TUNE_NS = "http://jabber.org/protocol/tune"
BOOKMARKS_NS = "urn:xmpp:bookmarks:1"


def _text(element: etree._Element) -> str | None:
    """An element's stripped text, ``None`` when empty."""
    return (element.text or "").strip() or None


class AvatarMetadataParser:
    """XEP-0084 avatar metadata: the ``info`` elements describing the published images."""

    name = "xep-0084"
    version = 1
    namespace = AVATAR_METADATA_NS

    _ROOT = f"{{{AVATAR_METADATA_NS}}}metadata"
    _INFO = f"{{{AVATAR_METADATA_NS}}}info"

    def parse(self, element: etree._Element) -> ParsedPayload:
        """Parse a ``metadata`` root; ``infos`` is empty when the user disabled the avatar."""
        expect_root(element, self._ROOT)
        infos = [
            {
                "id": info.get("id"),
                "type": info.get("type"),
                "bytes": to_int(info.get("bytes")),
                "width": to_int(info.get("width")),
                "height": to_int(info.get("height")),
                "url": info.get("url"),
            }
            for info in element.iterchildren(self._INFO)
        ]
        return ParsedPayload(data={"infos": infos})


class GeolocParser:
    """XEP-0080 user location: every child element by name, the numeric ones as floats."""

    name = "xep-0080"
    version = 1
    namespace = GEOLOC_NS

    _ROOT = f"{{{GEOLOC_NS}}}geoloc"
    _PREFIX = f"{{{GEOLOC_NS}}}"
    #: Elements typed xs:decimal by the XEP (``error`` is deprecated, still sent by old clients).
    NUMERIC = frozenset(
        {"accuracy", "alt", "altaccuracy", "bearing", "error", "lat", "lon", "speed"}
    )
    #: Human-readable elements, in the order they are joined for search.
    TEXTUAL = (
        "text",
        "description",
        "building",
        "floor",
        "room",
        "street",
        "area",
        "locality",
        "postalcode",
        "region",
        "country",
    )

    text_keys = TEXTUAL

    def parse(self, element: etree._Element) -> ParsedPayload:
        """Parse a ``geoloc`` root; ``timestamp`` also becomes ``published``."""
        expect_root(element, self._ROOT)
        data: dict[str, Any] = {}
        prefix = self._PREFIX
        for child in element:
            tag = child.tag
            # Skip comments, PIs and extension elements of other namespaces.
            if not isinstance(tag, str) or not tag.startswith(prefix):
                continue
            key = tag[len(prefix) :]
            if key in data:
                continue  # the first occurrence wins
            value = _text(child)
            data[key] = to_finite_float(value) if key in self.NUMERIC else value
        timestamp = parse_xep0082_datetime(data.get("timestamp"))
        if "timestamp" in data:
            data["timestamp"] = timestamp.isoformat() if timestamp else None
        language = element.get(XML_LANG)
        if language:
            data["language"] = language
        text = "\n".join(str(data[key]) for key in self.TEXTUAL if data.get(key))
        return ParsedPayload(data=data, text=text, published=timestamp)


class TuneParser:
    """XEP-0118 user tune: what the user is listening to."""

    name = "xep-0118"
    version = 1
    namespace = TUNE_NS
    searchable = ("artist", "title")
    text_keys = ("artist", "title", "source")

    _ROOT = f"{{{TUNE_NS}}}tune"
    _FIELDS = ("artist", "length", "rating", "source", "title", "track", "uri")
    _INTEGERS = frozenset({"length", "rating"})

    def parse(self, element: etree._Element) -> ParsedPayload:
        """Parse a ``tune`` root; all values are ``None`` when the user stopped listening."""
        expect_root(element, self._ROOT)
        data: dict[str, Any] = dict.fromkeys(self._FIELDS)
        prefix = f"{{{TUNE_NS}}}"
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or not tag.startswith(prefix):
                continue
            key = tag[len(prefix) :]
            if key not in data or data[key] is not None:
                continue
            value = _text(child)
            data[key] = to_int(value) if key in self._INTEGERS else value
        text = "\n".join(data[key] for key in self.text_keys if data[key])
        return ParsedPayload(data=data, text=text)


class BookmarksParser:
    """XEP-0402 PEP native bookmarks: one ``conference`` per item (the item id is the room JID).

    The password is never copied into the cache, only whether there is one; ``extensions`` is
    client-private state and is ignored.
    """

    name = "xep-0402"
    version = 1
    namespace = BOOKMARKS_NS
    searchable = ("name",)
    text_keys = ("name",)

    _ROOT = f"{{{BOOKMARKS_NS}}}conference"
    _NICK = f"{{{BOOKMARKS_NS}}}nick"
    _PASSWORD = f"{{{BOOKMARKS_NS}}}password"

    def parse(self, element: etree._Element) -> ParsedPayload:
        """Parse a ``conference`` root."""
        expect_root(element, self._ROOT)
        nick: str | None = None
        has_password = False
        for child in element:
            if child.tag == self._NICK and nick is None:
                nick = _text(child)
            elif child.tag == self._PASSWORD:
                has_password = has_password or bool(child.text)
        name = (element.get("name") or "").strip() or None
        # xs:boolean: "true" or "1"; anything else (absent included) is false.
        autojoin = (element.get("autojoin") or "").strip() in ("true", "1")
        data = {"name": name, "autojoin": autojoin, "nick": nick, "has_password": has_password}
        return ParsedPayload(data=data, text=name or "")
