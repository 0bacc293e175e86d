"""Retention (``pubsub-cache log compact``): delete events that no longer matter.

Only events below the lowest checkpoint are considered (every projector has applied them), and
only those whose removal cannot change a rebuilt read model, so replay after compaction still
equals live (tests/storage/test_compaction.py):

- every event of a node before a ``cache-reset`` that covers it (the node row itself is gone);
- item events (publish, sync page, retract) of a node before the node's last purge or delete;
- publications (or sync pages) all of whose items are retracted later, except on a node whose
  ``max_items`` the cache learned from its configuration: there a publication may have evicted
  another item, which a rebuild without it would keep.

The first and the last remaining event of each node are always kept: they fix the node row's
``created_position`` and ``updated_position`` (and the first payload chose its analyser).
Rejected-notification events are kept (they are counted). Positions are never reused.

:func:`sweep_contents` deletes the payload contents no item references (a batch collects what
it released; a content a concurrent writer held then, or items deleted outside the projector,
e.g. by a node's cascade, leave some behind).

A row that cannot be decoded is kept, and reported (position and error) to ``on_undecodable``
instead of stopping the compaction of the whole log: ``parked drop`` or a repair deals with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events import (
    AnyEvent,
    CacheReset,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodeEvent,
    NodePurged,
    NotificationRejected,
    SyncPageFetched,
    UndecodableEvent,
    decode,
)
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector.contents import ContentStore
from pubsub_cache.projector.schema import projector_checkpoint, pubsub_content, pubsub_item

NodeKey = tuple[str, str, str]
OnUndecodable = Callable[[UndecodableEvent], None]
log = logging.getLogger(__name__)
_ITEM_EVENTS = (ItemsPublished, SyncPageFetched, ItemsRetracted)


def lowest_checkpoint(engine: Engine) -> int:
    """The position every projector has applied (0 when none has run)."""
    with engine.connect() as connection:
        value = connection.execute(sa.select(sa.func.min(projector_checkpoint.c.position))).scalar()
    return int(value or 0)


def compact(
    engine: Engine, *, batch: int = 5000, on_undecodable: OnUndecodable | None = None
) -> int:
    """Delete the irrelevant events below the lowest checkpoint; returns how many.

    Undecodable rows are kept and passed to ``on_undecodable`` (default: logged).
    """
    upto = lowest_checkpoint(engine)
    log = EventLog(engine)
    resets: list[tuple[int, CacheReset]] = []
    wipes: dict[NodeKey, int] = {}
    retracts: dict[tuple[NodeKey, str], int] = {}
    limited: set[NodeKey] = set()  # nodes where publications evict (a known max_items)
    for position, event in _events(log, upto, batch, on_undecodable or _log_undecodable):
        match event:
            case NodeConfigured(form=form) if form and "pubsub#max_items" in form:
                limited.add((event.account, event.service, event.node))
            case CacheReset():
                resets.append((position, event))
            case NodePurged() | NodeDeleted():
                wipes[(event.account, event.service, event.node)] = position
            case ItemsRetracted(item_ids=item_ids):
                key = (event.account, event.service, event.node)
                for item_id in item_ids:
                    retracts[(key, item_id)] = position
    removable: list[int] = []
    bounds: dict[NodeKey, list[int]] = {}  # first and last position that a rebuild must see
    for position, event in _events(log, upto, batch, lambda _: None):  # reported above
        if isinstance(event, NotificationRejected) or not isinstance(event, NodeEvent):
            continue
        key = (event.account, event.service, event.node)
        if _reset_after(resets, position, key):
            removable.append(position)
            continue
        bound = bounds.setdefault(key, [position, position])
        bound[1] = position
        if isinstance(event, _ITEM_EVENTS) and (
            position < wipes.get(key, 0)
            or (key not in limited and _all_retracted_later(event, key, position, retracts))
        ):
            removable.append(position)
    kept = {position for bound in bounds.values() for position in bound}
    doomed = [position for position in removable if position not in kept]
    with write_transaction(engine) as connection:
        for start in range(0, len(doomed), 1000):
            chunk = doomed[start : start + 1000]
            connection.execute(event_table.delete().where(event_table.c.position.in_(chunk)))
    log.close()
    return len(doomed)


def _events(
    log: EventLog, upto: int, batch: int, report: OnUndecodable
) -> Iterator[tuple[int, AnyEvent]]:
    after = 0
    while after < upto:
        records = log.read_raw(after=after, limit=batch)
        if not records:
            return
        for record in records:
            if record.position > upto:
                return
            try:
                event = decode(record.body, position=record.position)
            except UndecodableEvent as exc:
                report(exc)
                continue
            yield record.position, event
        after = records[-1].position


def _log_undecodable(error: UndecodableEvent) -> None:
    log.warning("kept by the compaction: %s", error, extra={"position": error.position})


def _reset_after(resets: list[tuple[int, CacheReset]], position: int, key: NodeKey) -> bool:
    account, service, node = key
    return any(
        at > position
        and reset.account == account
        and reset.service in (None, service)
        and reset.node in (None, node)
        for at, reset in resets
    )


def _all_retracted_later(
    event: AnyEvent, key: NodeKey, position: int, retracts: dict[tuple[NodeKey, str], int]
) -> bool:
    if not isinstance(event, ItemsPublished | SyncPageFetched) or not event.items:
        return False
    return all(retracts.get((key, item.id), 0) > position for item in event.items)


def sweep_contents(engine: Engine) -> int:
    """Delete the ``pubsub_content`` rows no item references; returns how many."""
    with write_transaction(engine) as connection:
        return ContentStore(connection, pubsub_content).sweep(pubsub_item)
