"""The change feed: the read model's changes of an account, as the log records them, each handed
out once the projector has applied it.

A :class:`Change` is one event of the log that changes the read model of a node: items published
(a notification) or fetched (a sync's page), retracted, listed (a reconciliation: the service
holds these ids and no others), the node purged, deleted or configured, its sync state; or an
operator's command spanning nodes (``service``/``node`` then say which, ``None`` for all). It
carries the event's log position: ``watch(..., after=change.position)`` resumes right after it.

Read-your-writes: a change is handed out only once every checkpoint of the projector has passed
its position, so a read of the cache made on receiving it sees it. The feed is woken by the log
(:meth:`EventLog.wait <pubsub_cache.events.log.EventLog.wait>`: LISTEN/NOTIFY on PostgreSQL,
this process's appends at once, a look at the head every few milliseconds on SQLite), never by
polling the read model; the checkpoint row is looked at only once the log shows a change.
Everything here blocks: the facades run it in a worker thread (async) or the caller's (blocking).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.codec import decode
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.events.types import (
    AnyEvent,
    CachePurged,
    CacheReset,
    ItemsListed,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodePurged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncStarted,
)

from .nodes import LIVE_PROJECTOR, checkpoint_position

ChangeKind = Literal[
    "published",
    "fetched",
    "retracted",
    "listed",
    "purged",
    "deleted",
    "configured",
    "sync",
    "cache-purged",
    "cache-reset",
]

#: The stored event types that change the read model (``type`` column of the log).
TYPES = (
    "items-published",
    "sync-page",
    "items-retracted",
    "items-listed",
    "node-purged",
    "node-deleted",
    "node-configured",
    "sync-started",
    "sync-completed",
    "sync-failed",
    "cache-purged",
    "cache-reset",
)

#: Events read from the log at most per look.
BATCH = 500


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the read model, at ``position`` in the log."""

    position: int
    kind: ChangeKind
    account: str
    service: str | None
    node: str | None
    item_ids: tuple[str, ...] = ()
    """The items published, fetched, retracted or listed."""
    sync_state: str | None = None
    """For ``sync``: ``IN_PROGRESS``, ``COMPLETED``, ``PARTIAL`` or ``ERROR``."""


class ChangeFeed:
    """The changes of ``account`` (of one ``service``, of one ``node`` when given)."""

    def __init__(
        self,
        engine: Engine,
        log: EventLog,
        account: str,
        *,
        service: str | None = None,
        node: str | None = None,
        projector: str | None = LIVE_PROJECTOR,
    ) -> None:
        self._engine = engine
        self._log = log
        self._projector = projector
        scope = [event_table.c.account == account, event_table.c.type.in_(TYPES)]
        # Commands spanning nodes are stored with an empty service or node.
        if service is not None:
            scope.append(event_table.c.service.in_((service, "")))
        if node is not None:
            scope.append(event_table.c.node.in_((node, "")))
        self._query = (
            sa.select(event_table.c.position, event_table.c.body)
            .where(*scope, event_table.c.position > sa.bindparam("after"))
            .where(event_table.c.position <= sa.bindparam("upto"))
            .order_by(event_table.c.position)
            .limit(BATCH)
        )

    def start(self, after: int | None) -> int:
        """The position to read after: ``after``, or the log's head (changes from now on)."""
        return self._log.head() if after is None else after

    def next(
        self, after: int, *, timeout: float, stop: threading.Event | None = None
    ) -> tuple[list[Change], int]:
        """The changes after ``after`` that the projector applied, and the position to read
        after next; waits up to ``timeout`` seconds (or until ``stop``) for them."""
        if not self._log.wait(after=after, timeout=timeout, stop=stop):
            return [], after
        upto = self._log.head()
        with self._engine.connect() as connection:
            rows = connection.execute(self._query, {"after": after, "upto": upto}).all()
        if len(rows) == BATCH:
            upto = rows[-1].position
        changes = [
            change
            for position, body in rows
            if (change := as_change(position, decode(body, position=position))) is not None
        ]
        if not changes:
            return [], upto
        reached = self._applied(changes[-1].position, timeout, stop)
        if reached >= changes[-1].position:
            return changes, upto
        ready = [change for change in changes if change.position <= reached]
        return ready, ready[-1].position if ready else after

    def _applied(self, position: int, timeout: float, stop: threading.Event | None) -> int:
        # The position the projector reached, once past ``position`` (or when time is up).
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            reached = checkpoint_position(self._engine, self._projector) or 0
            if reached >= position or time.monotonic() >= deadline or stop.is_set():
                return reached
            stop.wait(delay)
            delay = min(delay * 2, 0.05)


def as_change(position: int, event: AnyEvent) -> Change | None:
    """The change ``event`` makes to the read model (``None``: none a watcher sees)."""
    account = event.account
    match event:
        case ItemsPublished(service=service, node=node, items=items):
            ids = tuple(item.id for item in items)
            return Change(position, "published", account, service, node, ids)
        case SyncPageFetched(service=service, node=node, items=items):
            ids = tuple(item.id for item in items)
            return Change(position, "fetched", account, service, node, ids)
        case ItemsRetracted(service=service, node=node, item_ids=ids):
            return Change(position, "retracted", account, service, node, tuple(ids))
        case ItemsListed(service=service, node=node, item_ids=ids):
            return Change(position, "listed", account, service, node, tuple(ids))
        case NodePurged(service=service, node=node):
            return Change(position, "purged", account, service, node)
        case NodeDeleted(service=service, node=node):
            return Change(position, "deleted", account, service, node)
        case NodeConfigured(service=service, node=node):
            return Change(position, "configured", account, service, node)
        case SyncStarted(service=service, node=node):
            return Change(position, "sync", account, service, node, sync_state="IN_PROGRESS")
        case SyncCompleted(service=service, node=node, complete=complete):
            state = "COMPLETED" if complete else "PARTIAL"
            return Change(position, "sync", account, service, node, sync_state=state)
        case SyncFailed(service=service, node=node):
            return Change(position, "sync", account, service, node, sync_state="ERROR")
        case CachePurged(service=service, node=node):
            return Change(position, "cache-purged", account, service, node)
        case CacheReset(service=service, node=node):
            return Change(position, "cache-reset", account, service, node)
    return None
