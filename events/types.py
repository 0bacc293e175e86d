"""The facts the cache records: one msgspec Struct per event type, in one tagged union.

Every event is something one account saw (its view of a pubsub service, as in Libervia) or an
operator command. Rules that keep stored events decoding forever (see tests/golden):

- tags (``tag=``) are explicit and never change, whatever the class is called;
- a new field always has a default, and a field's type never changes;
- ``v`` is the schema version of the struct that wrote the event; it is always encoded.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from .errors import InvalidEvent
from .limits import MAX_TEXT, describe, struct_problem

#: Where a fact came from: a pubsub notification, a page fetched by a sync or a live read,
#: or a command (operator, query library).
Source = Literal["notification", "fetch", "command"]

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
"""A JID, node name or item id: non-empty, at most 3071 characters (as msgspec counts them)."""

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware timestamp; naive datetimes are refused."""

SyncState = Literal["NONE", "IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR"]

ServiceOrder = Literal["creation", "modification"]
"""How a service orders the items it lists (XEP-0060 leaves it open): by first publication (a
re-published id keeps its place: ejabberd) or by last publication (it moves to the end: Prosody)."""


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries."""

    v: int = 1
    account: NonEmpty
    """The bare JID whose view of pubsub this is."""
    observed_at: AwareDatetime
    source: Source = "notification"

    def __post_init__(self) -> None:
        # msgspec checks types, Annotated constraints and Literals only when decoding; checking
        # every field of the concrete class here (events/limits.py, the decoder's own rules)
        # means an event that could not be decoded cannot even be built, so none reaches the log
        # (invariant 11) and a batch holding one is never half-written.
        problem = struct_problem(self)
        if problem is not None:
            raise InvalidEvent(_kind(self), problem)


class NodeEvent(Event, frozen=True, kw_only=True):
    """An event about one node of one pubsub service (or PEP account)."""

    service: NonEmpty
    node: NonEmpty

    def __post_init__(self) -> None:
        # Explicit base calls: zero-argument super() fails inside msgspec Structs. The base
        # checks every field, service and node included.
        Event.__post_init__(self)


class Item(msgspec.Struct, frozen=True, kw_only=True):
    """One item as the server sent it."""

    id: NonEmpty
    publisher: str | None = None
    payload: str | None = None
    """The item's payload element serialised as XML; ``None`` for a notify-only item."""
    delay: AwareDatetime | None = None
    """The XEP-0203 ``<delay>`` stamp of the message, when there was one."""

    def __post_init__(self) -> None:
        problem = struct_problem(self)
        if problem is not None:
            raise InvalidEvent("item", problem)


class ItemsPublished(NodeEvent, tag="items-published", frozen=True, kw_only=True):
    """Items were published (or re-published) to the node."""

    items: Annotated[list[Item], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        NodeEvent.__post_init__(self)  # items: a non-empty list of Item, checked there


class ItemsRetracted(NodeEvent, tag="items-retracted", frozen=True, kw_only=True):
    """Items were retracted (deleted) from the node."""

    item_ids: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        NodeEvent.__post_init__(self)  # item_ids: non-empty, each a NonEmpty, checked there


class NodePurged(NodeEvent, tag="node-purged", frozen=True, kw_only=True):
    """Every item of the node was removed."""


class NodeDeleted(NodeEvent, tag="node-deleted", frozen=True, kw_only=True):
    """The node was deleted, possibly pointing at a replacement."""

    redirect: str | None = None


class NodeConfigured(NodeEvent, tag="node-configured", frozen=True, kw_only=True):
    """The node's configuration changed; ``form`` holds the data form fields when sent."""

    form: dict[str, list[str]] | None = None


class SubscriptionChanged(NodeEvent, tag="subscription-changed", frozen=True, kw_only=True):
    """The account's subscription to the node changed."""

    jid: NonEmpty
    subscription: Literal["none", "pending", "subscribed", "unconfigured"]
    subid: str | None = None


class SyncRequested(NodeEvent, tag="sync-requested", frozen=True, kw_only=True):
    """Someone (an operator, the query library) asked for the node to be synchronised."""

    source: Source = "command"
    reason: str | None = None


class SyncStarted(NodeEvent, tag="sync-started", frozen=True, kw_only=True):
    """A full synchronisation of the node began; ``sync_id`` ties its pages together."""

    source: Source = "fetch"
    sync_id: NonEmpty
    order: ServiceOrder | None = None
    """How the service orders its listing, as the ingest learned it; ``None`` when unknown
    (the projector then takes the listing as the order of first publication)."""


class SyncPageFetched(NodeEvent, tag="sync-page", frozen=True, kw_only=True):
    """One page of a synchronisation arrived."""

    source: Source = "fetch"
    sync_id: NonEmpty
    items: list[Item]
    page: int = 0
    offset: int = 0
    """How many items the earlier pages of this sync listed: the place of this page's first
    item in the service's listing."""

    def __post_init__(self) -> None:
        NodeEvent.__post_init__(self)
        _items(self, self.items, allow_empty=True)
        if type(self.offset) is not int or self.offset < 0:
            raise InvalidEvent(event_tag(self), f"offset must be >= 0, got {self.offset!r}")


class SyncCompleted(NodeEvent, tag="sync-completed", frozen=True, kw_only=True):
    """A synchronisation ended; ``complete`` is false when not every item could be fetched."""

    source: Source = "fetch"
    sync_id: NonEmpty
    complete: bool
    item_count: int
    reason: str | None = None
    """Why the sync is partial (no RSM, server cap, limit), when it is."""


class SyncFailed(NodeEvent, tag="sync-failed", frozen=True, kw_only=True):
    """A synchronisation could not be carried out."""

    source: Source = "fetch"
    sync_id: NonEmpty
    error: str
    condition: str | None = None
    """The XMPP error condition (``item-not-found``, ``forbidden``, ...) when there was one."""


class ItemsListed(NodeEvent, tag="items-listed", frozen=True, kw_only=True):
    """The ids the service listed for the node, without payloads (a reconciliation).

    Logged at the place of the service's reply among the notifications, so the read model at
    that position is what the account had seen when the service answered. Cached items the
    listing lacks were dropped by the service without a notification (evicted beyond
    ``max_items``, or retracted silently): the projector removes them, and asks for a sync
    when the listing names ids the cache lacks. This event is the logged cause of such an
    eviction. An incomplete listing (``complete`` false) removes nothing.
    """

    source: Source = "fetch"
    item_ids: list[NonEmpty]
    complete: bool = True
    via: str = "disco#items"
    """The request that produced the listing."""

    def __post_init__(self) -> None:
        NodeEvent.__post_init__(self)
        if not isinstance(self.item_ids, list):
            raise InvalidEvent(event_tag(self), f"item_ids must be a list, got {self.item_ids!r}")
        for item_id in self.item_ids:
            _text(self, "item id", item_id)


class NotificationRejected(NodeEvent, tag="notification-rejected", frozen=True, kw_only=True):
    """A notification was refused because its sender may not speak for the node (invariant 7).

    ``service`` is the JID the message came from, ``node`` the node it named. Kept in the log so
    that rejections are auditable and counted; the read model is never changed by it.
    """

    reason: str


class CachePurged(Event, tag="cache-purged", frozen=True, kw_only=True):
    """Operator command: forget cached items matching every given filter (``None`` or an
    empty list = any). A list matches any of its values (``node_types=["blog", "avatar"]``).

    ``node_types``, ``subtypes`` and ``created_before`` came later: events logged before them
    decode with the defaults, which filter nothing, so a replay of an old log is unchanged.
    """

    source: Source = "command"
    service: str | None = None
    node: str | None = None
    node_type: str | None = None
    """One node type (what one ``--type`` records, readable by versions before ``node_types``)."""
    older_than: AwareDatetime | None = None
    """Only items the cache last saw change before this moment."""
    node_types: list[NonEmpty] = []
    """Only nodes of one of these types."""
    subtypes: list[NonEmpty] = []
    """Only nodes of one of these subtypes."""
    created_before: AwareDatetime | None = None
    """Only items the cache first stored before this moment."""


class CacheReset(Event, tag="cache-reset", frozen=True, kw_only=True):
    """Operator command: forget nodes (items and sync state) matching the filters."""

    source: Source = "command"
    service: str | None = None
    node: str | None = None


AnyEvent = (
    ItemsPublished
    | ItemsRetracted
    | NodePurged
    | NodeDeleted
    | NodeConfigured
    | SubscriptionChanged
    | SyncRequested
    | SyncStarted
    | SyncPageFetched
    | SyncCompleted
    | SyncFailed
    | ItemsListed
    | NotificationRejected
    | CachePurged
    | CacheReset
)
"""Every event type the log may hold."""

EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)


_TAGS: dict[type, str] = {cls: str(cls.__struct_config__.tag) for cls in EVENT_TYPES}


def event_tag(event: Event) -> str:
    """The stable tag of ``event``'s type, as stored in the log's ``type`` column."""
    return _TAGS[type(event)]


def event_scope(event: Event) -> tuple[str, str]:
    """The (service, node) the event speaks for; ``""`` for commands spanning nodes."""
    if isinstance(event, NodeEvent):  # the common case first: it is on the append path
        return event.service, event.node
    service = getattr(event, "service", None) or ""
    node = getattr(event, "node", None) or ""
    return service, node


def _text(owner: object, name: str, value: object) -> None:
    if type(value) is not str or not 0 < len(value) <= MAX_TEXT:
        raise InvalidEvent(
            _kind(owner),
            f"{name} must be a non-empty string of at most {MAX_TEXT} characters, "
            f"got {describe(value)}",
        )


def _time(owner: object, name: str, value: object) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidEvent(_kind(owner), f"{name} must be a timezone-aware datetime, got {value!r}")


def _items(owner: Event, items: object, *, allow_empty: bool) -> None:
    if not isinstance(items, list) or not (items or allow_empty):
        raise InvalidEvent(_kind(owner), f"items must be a non-empty list, got {items!r}")
    for item in items:
        if not isinstance(item, Item):
            raise InvalidEvent(_kind(owner), f"items must be Item structs, got {item!r}")


def _kind(owner: object) -> str:
    if isinstance(owner, Event):
        return event_tag(owner)
    return type(owner).__name__.lower()
