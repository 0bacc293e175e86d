"""What the query library returns: pages of items with their RSM set, node states, search hits.

Times are timezone-aware UTC datetimes. An item's ``parsed`` JSON is decoded on first access:
the database hands it over as text, and a reader that only wants ids or payloads should not pay
for decoding twenty JSON documents it never looks at (it is half the cost of a cached page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from .errors import InvalidRsm

Order = Literal["service", "creation", "modification", "publication"]
"""The orders of ``get_items``: ``service`` (the default) is the one the node's service lists
items in, which is ``creation`` on ejabberd and ``modification`` on Prosody (see
``projector/ranks.py``); ``publication`` sorts by the payload's date."""
ORDERS: tuple[Order, ...] = ("service", "creation", "modification", "publication")

_decode_json = msgspec.json.decode
_UNDECODED: Any = object()


def utc(seconds: float | None) -> datetime | None:
    """Unix seconds as an aware UTC datetime (``None`` stays ``None``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 text, for JSON output."""
    return None if moment is None else moment.isoformat()


class PageItem(msgspec.Struct):
    """One pubsub item: id, publisher, raw payload XML, parsed JSON and times.

    ``parsed`` is ``None`` when the node has no parser or the payload did not parse; ``payload``
    is ``None`` for a notify-only item whose payload was never fetched. ``published`` is when
    the payload (or the ``<delay>`` stamp) says it was published, else when it was first seen;
    ``updated`` when the cache last saw it change (``None`` for live answers: servers don't say).
    Times are stored as Unix seconds and turned into datetimes when read.
    """

    id: str
    publisher: str | None
    payload: str | None
    parsed_json: Any = None
    """``parsed`` as the database gave it: JSON text, or already decoded."""
    published_at: float | None = None
    updated_at: float | None = None
    parse_error: str | None = None
    """Why the payload has no ``parsed`` data although it has a payload (``None`` when it parsed,
    or when its node has no parser and the payload is well-formed)."""
    _parsed: Any = _UNDECODED

    @property
    def parsed(self) -> Any:
        """The parser's JSON data (decoded on first access), or ``None``."""
        if self._parsed is _UNDECODED:
            raw = self.parsed_json
            # On PostgreSQL a driver may hand over JSONB already decoded.
            self._parsed = _decode_json(raw) if isinstance(raw, str | bytes) else raw
        return self._parsed

    @property
    def published(self) -> datetime | None:
        """When the item was published (aware UTC)."""
        return utc(self.published_at)

    @property
    def updated(self) -> datetime | None:
        """When the cache last saw the item change (aware UTC); ``None`` for live answers."""
        return utc(self.updated_at)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: id, publisher, payload, parsed, parse_error, published, updated."""
        return {
            "id": self.id,
            "publisher": self.publisher,
            "payload": self.payload,
            "parsed": self.parsed,
            "parse_error": self.parse_error,
            "published": iso(self.published),
            "updated": iso(self.updated),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PageItem):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable (the decoded cache): not hashable

    def __repr__(self) -> str:
        return f"PageItem(id={self.id!r}, publisher={self.publisher!r}, published={self.published})"


@dataclass(frozen=True, slots=True)
class RsmRequest:
    """An XEP-0059 request: ``max`` items ``after``/``before`` an item id, or from ``index``.

    ``before=""`` asks for the last page; ``max=0`` for the count only; no ``max`` for every
    item from the starting point. ``after``, ``before`` and ``index`` are mutually exclusive.
    """

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.max is not None and (type(self.max) is not int or self.max < 0):
            raise InvalidRsm(f"max must be a non-negative integer, got {self.max!r}")
        if self.index is not None and (type(self.index) is not int or self.index < 0):
            raise InvalidRsm(f"index must be a non-negative integer, got {self.index!r}")
        if self.after == "":
            raise InvalidRsm("after must name an item id (only before may be empty)")
        given = [n for n in ("after", "before", "index") if getattr(self, n) is not None]
        if len(given) > 1:
            raise InvalidRsm(f"{' and '.join(given)} cannot be combined")


@dataclass(frozen=True, slots=True)
class RsmResult:
    """The XEP-0059 ``<set/>`` of an answer: the page's first and last ids, the index of its
    first item in the result set, and the size of the set (``None`` when not known)."""

    first: str | None = None
    last: str | None = None
    index: int | None = None
    count: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"first": self.first, "last": self.last, "index": self.index, "count": self.count}


@dataclass(frozen=True, slots=True)
class Page:
    """An answer to ``get_items``.

    ``complete`` is true when the result set is known to be the service's own (so ``rsm.count``
    is exact): a COMPLETED node, or a live read that got every item. ``from_cache`` says where
    the answer came from; ``sync_requested`` that this read asked the daemon to sync the node.
    """

    items: list[PageItem]
    rsm: RsmResult
    complete: bool
    from_cache: bool
    sync_requested: bool = False
    order: str = "service"
    """The order the items are in: ``creation``, ``modification`` or ``publication``, or
    ``service`` when it is the service's own and the cache does not know which that is. A live
    read can only give the service's order (or publication order): asked for the other one, it
    says so here rather than pretending."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: items, rsm, complete, from_cache, sync_requested, order."""
        return {
            "items": [item.as_dict() for item in self.items],
            "rsm": self.rsm.as_dict(),
            "complete": self.complete,
            "from_cache": self.from_cache,
            "sync_requested": self.sync_requested,
            "order": self.order,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeState:
    """A node as the read model knows it, for one account."""

    account: str
    service: str
    node: str
    analyser: str | None
    type: str | None
    subtype: str | None
    to_sync: bool
    sync_state: str
    sync_reason: str | None
    sync_at: datetime | None
    sync_requested: bool
    subscribed: bool
    subscription: str | None
    item_count: int
    deleted: bool
    redirect: str | None
    updated_at: datetime | None
    configuration: dict[str, Any] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["sync_at"] = iso(self.sync_at)
        values["updated_at"] = iso(self.updated_at)
        return values


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One item found by a search, with the node it belongs to."""

    service: str
    node: str
    item: PageItem

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: service, node and the item's fields."""
        return {"service": self.service, "node": self.node, **self.item.as_dict()}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A page of search hits and the number of items matching in all."""

    hits: list[SearchHit]
    total: int
    limit: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "hits": [hit.as_dict() for hit in self.hits],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }
