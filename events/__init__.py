"""The event log: event types, their codec, and the append-only log they are stored in.

This package is the bottom layer: it imports nothing else of the project but
:mod:`pubsub_cache.errors`, and nothing here connects to anything at import time.
"""

from .codec import decode, encode, encode_valid
from .errors import InvalidEvent, UndecodableEvent
from .types import (
    AnyEvent,
    CachePurged,
    CacheReset,
    Event,
    Item,
    ItemsListed,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodeEvent,
    NodePurged,
    NotificationRejected,
    ServiceOrder,
    Source,
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncRequested,
    SyncStarted,
    SyncState,
    event_scope,
    event_tag,
)

__all__ = [
    "AnyEvent",
    "CachePurged",
    "CacheReset",
    "Event",
    "InvalidEvent",
    "Item",
    "ItemsListed",
    "ItemsPublished",
    "ItemsRetracted",
    "NodeConfigured",
    "NodeDeleted",
    "NodeEvent",
    "NodePurged",
    "NotificationRejected",
    "ServiceOrder",
    "Source",
    "SubscriptionChanged",
    "SyncCompleted",
    "SyncFailed",
    "SyncPageFetched",
    "SyncRequested",
    "SyncStarted",
    "SyncState",
    "UndecodableEvent",
    "decode",
    "encode",
    "encode_valid",
    "event_scope",
    "event_tag",
]
