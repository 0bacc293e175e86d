"""The apply rules: how each event changes ``pubsub_node`` and ``pubsub_item``.

A :class:`BatchApplier` applies events in log order on one connection, inside the caller's
transaction (the runner commits them with the checkpoint). Item writes are buffered and flushed
in bulk (``executemany``) before any statement that needs the table as it stands, and at the end
of the batch: a node of 1,000 items costs a few statements, not thousands.

Every value written comes from the events themselves (never the wall clock), so replaying the
log from position 0 gives the same rows as following it live (invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.events import (
    AnyEvent,
    CachePurged,
    CacheReset,
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
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncRequested,
    SyncStarted,
)
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, NodeInfo
from pubsub_cache.projector.items import ItemWriter
from pubsub_cache.projector.payloads import ParseCache, payload_namespace
from pubsub_cache.projector.ranks import Placement, last_places, rank
from pubsub_cache.projector.schema import LIVE, ReadModel

NodeKey = tuple[str, str, str]
OwnsNode = Callable[[NodeKey], bool]
"""Whether a projector applies the events of a node (its partition owns the node)."""


class NodeChanges(TypedDict, total=False):
    """The ``pubsub_node`` columns an event may change, with their types: what
    :meth:`BatchApplier._update` takes (a misspelt or mistyped column fails ``mypy``)."""

    analyser: str
    type: str | None
    subtype: str | None
    to_sync: bool
    deleted: bool
    redirect: str | None
    sync_state: str
    sync_reason: str | None
    sync_at: float
    sync_id: str | None
    sync_position: int
    sync_requested_position: int | None
    subscription: str
    subscribed: bool
    configuration: dict[str, list[str]] | None
    max_items: int | None
    notify_retract: bool | None
    item_order: str


@dataclass
class NodeRow:
    """What the applier keeps in memory about one node of the read model."""

    id: int
    analyser: Analyser | None
    sync_id: str | None
    sync_position: int | None
    deleted: bool = False
    item_order: str | None = None
    """How the service lists items (``ServiceOrder``); ``None`` until a sync learned it."""
    max_items: int | None = None
    """The node's configured limit, when its configuration was seen."""
    most_items: int = 0
    """At least as many items as the node holds: its ``item_count`` when loaded, plus every
    item added since (removals are not subtracted, so it stays a bound). A publication on a
    limited node evicts only when this exceeds the limit: no DELETE on every publication."""


class BatchApplier:
    """Applies events to the read model on ``connection``; call :meth:`finish` before commit."""

    def __init__(
        self,
        connection: Connection,
        registry: AnalyserRegistry,
        tables: ReadModel = LIVE,
        *,
        owns: OwnsNode | None = None,
        parse_cache: ParseCache | None = None,
    ) -> None:
        self._connection = connection
        # Commands spanning nodes (CachePurged, CacheReset) reach every partition, each of
        # which applies them to the nodes it owns: at the command's place in its own log order.
        self._owns = owns
        self._tables = tables
        self._registry = registry
        self._analysers = {analyser.name: analyser for analyser in registry.analysers}
        self._nodes: dict[NodeKey, NodeRow] = {}
        self._items = ItemWriter(connection, tables, parse_cache)
        self._touched: dict[int, tuple[int, float]] = {}
        self._recount: set[int] = set()
        self._added: dict[int, int] = {}
        """Items each node gained in this batch (its count moves by that unless recounted)."""

    def apply(self, position: int, event: AnyEvent) -> None:
        """Apply one event (``position`` is its place in the log)."""
        when = event.observed_at.timestamp()
        match event:
            case ItemsPublished(items=items):
                node = self._node(event, position, items)
                added = 0
                for index, item in enumerate(items):
                    added += self._items.publish(
                        node.id,
                        node.analyser,
                        item,
                        position,
                        when=when,
                        sync_id=None,
                        placement=Placement(rank(position, index), None),
                        service_order=node.item_order,
                    )
                self._gained(node, added)
                if node.max_items is not None and node.most_items > node.max_items:
                    self._evict_beyond(node, node.max_items)
            case SyncPageFetched(items=items, sync_id=sync_id, offset=offset):
                node = self._node(event, position, items)
                # The listing places its items from the sync's start (see projector/ranks.py).
                start = node.sync_position if sync_id == node.sync_id else None
                listing: ServiceOrder = (
                    "modification" if node.item_order == "modification" else "creation"
                )
                added = 0
                for index in last_places([item.id for item in items]):
                    item = items[index]
                    added += self._items.publish(
                        node.id,
                        node.analyser,
                        item,
                        position,
                        when=when,
                        sync_id=sync_id,
                        placement=Placement(rank(start or position, offset + index), listing),
                        service_order=node.item_order,
                    )
                self._gained(node, added)
            case ItemsListed(item_ids=item_ids, complete=complete):
                node = self._node(event, position)
                self._reconcile(node, position, item_ids, complete)
            case ItemsRetracted(item_ids=item_ids):
                node = self._node(event, position)
                for item_id in item_ids:
                    self._items.retract(node.id, item_id)
            case NodePurged():
                node = self._node(event, position)
                self._items.delete_where(self._tables.item.c.node_id == node.id, nodes=[node.id])
            case NodeDeleted(redirect=redirect):
                node = self._node(event, position)
                self._items.delete_where(self._tables.item.c.node_id == node.id, nodes=[node.id])
                node.sync_id, node.deleted, node.max_items = None, True, None
                self._update(
                    node,
                    deleted=True,
                    redirect=redirect,
                    sync_state="NONE",
                    sync_id=None,
                    max_items=None,
                    notify_retract=None,
                    configuration=None,
                )
            case NodeConfigured(form=form):
                node = self._node(event, position)
                if form is not None:
                    self._configure(node, form)
            case SubscriptionChanged(jid=jid, subscription=subscription):
                node = self._node(event, position)
                if jid.split("/", 1)[0] == event.account:
                    subscribed = subscription == "subscribed"
                    self._update(node, subscription=subscription, subscribed=subscribed)
            case SyncRequested() | SyncStarted() | SyncCompleted() | SyncFailed():
                self._apply_sync(position, event, when)
            case NotificationRejected():
                self._count(event.account, "rejected")
            case CachePurged():
                self._purge(event, when)
            case CacheReset():
                self._reset(event)

    def _apply_sync(
        self,
        position: int,
        event: SyncRequested | SyncStarted | SyncCompleted | SyncFailed,
        when: float,
    ) -> None:
        match event:
            case SyncRequested():
                node = self._node(event, position)
                self._update(node, sync_requested_position=position)
            case SyncStarted(sync_id=sync_id, order=order):
                node = self._node(event, position)
                node.sync_id, node.sync_position = sync_id, position
                if order is not None and order != node.item_order:
                    self._set_item_order(node, order)
                self._update(
                    node,
                    sync_state="IN_PROGRESS",
                    sync_reason=None,
                    sync_at=when,
                    sync_id=sync_id,
                    sync_position=position,
                    sync_requested_position=None,
                )
            case SyncCompleted(sync_id=sync_id, complete=complete, reason=reason):
                node = self._node(event, position)
                if sync_id == node.sync_id:
                    self._complete_sync(node, sync_id, complete, reason, when)
            case SyncFailed(sync_id=sync_id, error=error, condition=condition):
                node = self._node(event, position)
                if sync_id == node.sync_id:
                    reason = f"{condition}: {error}" if condition else error
                    self._update(node, sync_state="ERROR", sync_reason=reason, sync_at=when)

    def prefetch(self, events: Iterable[AnyEvent]) -> None:
        """Load, in a few queries, the rows a batch of events will look up one by one."""
        wanted: dict[NodeKey, list[str]] = {}
        for event in events:
            if isinstance(event, ItemsPublished | SyncPageFetched):
                ids = [item.id for item in event.items]
            elif isinstance(event, ItemsRetracted):
                ids = list(event.item_ids)
            else:
                continue
            wanted.setdefault((event.account, event.service, event.node), []).extend(ids)
        for key, item_ids in wanted.items():
            node = self._nodes.get(key) or self._load_node(key)
            if node is not None:
                self._items.prefetch(node.id, item_ids)

    def finish(self) -> None:
        """Write what is buffered and the bookkeeping of every node the batch touched, and
        collect the contents no item references any more."""
        self._items.collect()
        node = self._tables.node.c
        # Counting a node's rows costs as much as the node is big: only nodes that may have
        # lost some are counted again; the others' counts move by what they gained.
        recount = self._recount | self._items.shrunk
        if recount:
            count = (
                sa.select(sa.func.count())
                .where(self._tables.item.c.node_id == node.id)
                .scalar_subquery()
            )
            self._connection.execute(
                self._tables.node.update()
                .where(node.id == sa.bindparam("node_id"))
                .values(item_count=count),
                [{"node_id": node_id} for node_id in recount],
            )
        if self._touched:
            self._connection.execute(
                self._tables.node.update()
                .where(node.id == sa.bindparam("node_id"))
                .values(
                    updated_position=sa.bindparam("position"),
                    updated_at=sa.bindparam("when"),
                    item_count=node.item_count + sa.bindparam("gained"),
                ),
                [
                    {
                        "node_id": node_id,
                        "position": position,
                        "when": when,
                        "gained": 0 if node_id in recount else self._added.get(node_id, 0),
                    }
                    for node_id, (position, when) in self._touched.items()
                ],
            )
        self._recount.clear()
        self._items.shrunk.clear()
        self._added.clear()
        self._touched.clear()

    def _gained(self, node: NodeRow, added: int) -> None:
        if added:
            node.most_items += added
            self._added[node.id] = self._added.get(node.id, 0) + added

    def _node(self, event: NodeEvent, position: int, items: Iterable[Item] = ()) -> NodeRow:
        key = (event.account, event.service, event.node)
        when = event.observed_at.timestamp()
        node = self._nodes.get(key) or self._load_node(key)
        if node is None:
            node = self._create_node(key, position, when, items)
        elif isinstance(event, ItemsPublished | SyncPageFetched):
            if node.deleted:  # published to again: the node was created anew
                node.deleted = False
                self._update(node, deleted=False, redirect=None)
            if node.analyser is None:
                # Nodes first seen without a payload are analysed again once one arrives.
                self._analyse(node, key, items)
        self._touched[node.id] = (position, when)
        return node

    def _load_node(self, key: NodeKey) -> NodeRow | None:
        columns = self._tables.node.c
        row = self._connection.execute(
            sa.select(
                columns.id,
                columns.analyser,
                columns.sync_id,
                columns.sync_position,
                columns.deleted,
                columns.item_order,
                columns.max_items,
                columns.item_count,
            ).where(columns.account == key[0], columns.service == key[1], columns.node == key[2])
        ).first()
        if row is None:
            return None
        analyser = self._analysers.get(row.analyser or "")
        node = NodeRow(
            row.id,
            analyser,
            row.sync_id,
            row.sync_position,
            bool(row.deleted),
            row.item_order,
            row.max_items,
            row.item_count,
        )
        self._nodes[key] = node
        return node

    def _create_node(
        self, key: NodeKey, position: int, when: float, items: Iterable[Item]
    ) -> NodeRow:
        analyser = self._match(key, items)
        node_type, subtype = analyser.node_type(_info(key)) if analyser else (None, None)
        node_id = self._connection.execute(
            self._tables.node.insert()
            .values(
                account=key[0],
                service=key[1],
                node=key[2],
                analyser=analyser.name if analyser else None,
                type=node_type,
                subtype=subtype,
                to_sync=bool(analyser and analyser.to_sync),
                created_position=position,
                updated_position=position,
                updated_at=when,
            )
            .returning(self._tables.node.c.id)
        ).scalar_one()
        node = NodeRow(node_id, analyser, None, None)
        self._nodes[key] = node
        self._items.node_created(node_id)
        return node

    def _analyse(self, node: NodeRow, key: NodeKey, items: Iterable[Item]) -> None:
        analyser = self._match(key, items)
        if analyser is None:
            return
        node.analyser = analyser
        node_type, subtype = analyser.node_type(_info(key))
        self._update(
            node, analyser=analyser.name, type=node_type, subtype=subtype, to_sync=analyser.to_sync
        )

    def _match(self, key: NodeKey, items: Iterable[Item]) -> Analyser | None:
        namespace = next(
            (payload_namespace(item.payload) for item in items if item.payload is not None), None
        )
        return self._registry.match(NodeInfo(key[1], key[2], namespace))

    def _update(self, node: NodeRow, **values: Unpack[NodeChanges]) -> None:
        self._connection.execute(
            self._tables.node.update().where(self._tables.node.c.id == node.id).values(**values)
        )

    def _complete_sync(
        self, node: NodeRow, sync_id: str, complete: bool, reason: str | None, when: float
    ) -> None:
        if complete:
            # Items neither in this sync nor (re)published since it started are gone from the
            # server; a partial sync cannot tell, so it removes nothing (invariant 6).
            stale = sa.and_(
                self._tables.item.c.node_id == node.id,
                sa.or_(
                    self._tables.item.c.synced_by.is_(None),
                    self._tables.item.c.synced_by != sync_id,
                ),
                self._tables.item.c.updated_position < (node.sync_position or 0),
            )
            self._items.delete_where(stale, nodes=[node.id])
        self._update(
            node,
            sync_state="COMPLETED" if complete else "PARTIAL",
            sync_reason=None if complete else (reason or "not every item could be fetched"),
            sync_at=when,
        )

    def _configure(self, node: NodeRow, form: dict[str, list[str]]) -> None:
        values: NodeChanges = {"configuration": form}
        if "pubsub#max_items" in form:
            # "max" (the server's own cap) or junk: unknown, left to reconciliation. A lowered
            # limit evicts nothing here: Prosody evicts at once, ejabberd at the next publish,
            # and a subscriber cannot tell which: the ingest reconciles after a configuration
            # notification, and the next publication evicts (below) on both.
            node.max_items = _max_items(form["pubsub#max_items"])
            values["max_items"] = node.max_items
        if "pubsub#notify_retract" in form:
            values["notify_retract"] = _boolean(form["pubsub#notify_retract"])
        self._update(node, **values)

    def _set_item_order(self, node: NodeRow, order: str) -> None:
        node.item_order = order
        self._update(node, item_order=order)
        self._items.flush()
        item = self._tables.item
        source = item.c.modification_rank if order == "modification" else item.c.creation_rank
        self._connection.execute(
            item.update().where(item.c.node_id == node.id).values(service_rank=source)
        )

    def _evict_beyond(self, node: NodeRow, limit: int) -> None:
        # Both servers keep the newest ``limit`` items in their own order when a publication
        # goes beyond the limit (Prosody silently, ejabberd with retracts only when
        # notify_retract is on): the same rule here, applied at every publication so that
        # replay in batches of any size evicts the same items (invariant 3).
        item = self._tables.item
        self._items.flush()
        newest = (
            sa.select(item.c.service_rank)
            .where(item.c.node_id == node.id)
            .order_by(item.c.service_rank.desc())
            .limit(1)
            .offset(max(limit, 1) - 1)
            .scalar_subquery()
        )
        self._items.delete_where(
            sa.and_(item.c.node_id == node.id, item.c.service_rank < newest), nodes=[node.id]
        )
        node.most_items = limit

    def _reconcile(self, node: NodeRow, position: int, listed: list[str], complete: bool) -> None:
        item = self._tables.item
        self._items.flush()
        cached = set(
            self._connection.execute(
                sa.select(item.c.item_id).where(item.c.node_id == node.id)
            ).scalars()
        )
        wanted = set(listed)
        gone = sorted(cached - wanted)
        if complete and gone:
            for start in range(0, len(gone), 500):
                chunk = gone[start : start + 500]
                self._items.delete_where(
                    sa.and_(item.c.node_id == node.id, item.c.item_id.in_(chunk)),
                    nodes=[node.id],
                )
        if wanted - cached:
            # Items the cache never saw (a notification lost): their payloads and places come
            # from a sync, which the ingest carries out as for any request.
            self._update(node, sync_requested_position=position)

    def _scope(self, event: CachePurged | CacheReset) -> sa.ColumnElement[bool]:
        clauses = [self._tables.node.c.account == event.account]
        if event.service is not None:
            clauses.append(self._tables.node.c.service == event.service)
        if event.node is not None:
            clauses.append(self._tables.node.c.node == event.node)
        if isinstance(event, CachePurged):
            if event.node_type is not None:
                clauses.append(self._tables.node.c.type == event.node_type)
            if event.node_types:  # any of them (an empty list: no filter, as before it existed)
                clauses.append(self._tables.node.c.type.in_(event.node_types))
            if event.subtypes:
                clauses.append(self._tables.node.c.subtype.in_(event.subtypes))
        return sa.and_(*clauses)

    def _nodes_in(self, event: CachePurged | CacheReset) -> list[int]:
        """The ids of the nodes ``event`` covers among those this applier owns."""
        node = self._tables.node.c
        rows = self._connection.execute(
            sa.select(node.id, node.account, node.service, node.node).where(self._scope(event))
        )
        owns = self._owns
        return [
            row.id for row in rows if owns is None or owns((row.account, row.service, row.node))
        ]

    def _purge(self, event: CachePurged, when: float) -> None:
        node_ids = self._nodes_in(event)
        if not node_ids:
            return
        item = self._tables.item.c
        condition: sa.ColumnElement[bool] = item.node_id.in_(node_ids)
        kept: list[str] = []  # what bounds the purge in time: some items of the node stay
        if event.older_than is not None:
            condition = sa.and_(condition, item.updated_at < event.older_than.timestamp())
            kept.append(f"items older than {event.older_than}")
        if event.created_before is not None:
            condition = sa.and_(condition, item.created_at < event.created_before.timestamp())
            kept.append(f"items stored before {event.created_before}")
        if kept:
            state, reason = "PARTIAL", f"{' and '.join(kept)} purged by operator"
        else:
            state, reason = "NONE", "purged by operator"
        self._items.delete_where(condition, nodes=node_ids)
        # A synced node that lost items must not claim to be complete any more.
        node = self._tables.node.c
        self._connection.execute(
            self._tables.node.update()
            .where(node.id.in_(node_ids), node.sync_state.in_(("COMPLETED", "PARTIAL")))
            .values(sync_state=state, sync_reason=reason, sync_at=when)
        )
        self._recount.update(node_ids)

    def _reset(self, event: CacheReset) -> None:
        node_ids = self._nodes_in(event)
        if not node_ids:
            return
        self._items.delete_where(self._tables.item.c.node_id.in_(node_ids), nodes=node_ids)
        self._connection.execute(
            self._tables.node.delete().where(self._tables.node.c.id.in_(node_ids))
        )
        self._nodes.clear()
        for node_id in node_ids:
            self._touched.pop(node_id, None)
            self._recount.discard(node_id)

    def _count(self, account: str, name: str) -> None:
        updated = self._connection.execute(
            self._tables.counter.update()
            .where(self._tables.counter.c.account == account, self._tables.counter.c.name == name)
            .values(value=self._tables.counter.c.value + 1)
        )
        if updated.rowcount == 0:
            self._connection.execute(
                self._tables.counter.insert().values(account=account, name=name, value=1)
            )


def _info(key: NodeKey) -> NodeInfo:
    return NodeInfo(key[1], key[2], None)


def _max_items(values: list[str]) -> int | None:
    text = values[0].strip() if values else ""
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def _boolean(values: list[str]) -> bool | None:
    text = values[0].strip().lower() if values else ""
    return {"1": True, "true": True, "0": False, "false": False}.get(text)
