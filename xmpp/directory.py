"""What the ingest asks of the read model and the analysers: which nodes it must keep synced.

The ingest never writes the read model (the projector owns it, and the log is the only way in);
it reads ``pubsub_node`` as the query library does, for three questions:

- which nodes to re-read after a (re)connection (notifications sent meanwhile are lost);
- which syncs were requested (``SyncRequested`` events, projected as
  ``sync_requested_position``);
- whether a node seen for the first time in a notification is to be synced (its analyser).

:class:`NodeDirectory` is the interface the ingest depends on; :class:`ReadModelDirectory` the
implementation over the database, built at the entry point.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.projector.analysers import AnalyserRegistry, NodeInfo
from pubsub_cache.projector.payloads import payload_namespace
from pubsub_cache.projector.schema import pubsub_item, pubsub_node

#: Sync states of a node that has been synced (or was being synced) and must stay so.
SYNCED_STATES = ("IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR")


class NodeRef(NamedTuple):
    """A node of a pubsub service (or of an account's PEP service)."""

    service: str
    node: str


class SyncRequest(NamedTuple):
    """A pending sync request: the node and the log position of its ``SyncRequested``."""

    ref: NodeRef
    position: int


class NodeLimits(NamedTuple):
    """What the read model knows of a node's limit on items."""

    max_items: int | None
    """From the node's configuration, when the account could read it (or was notified)."""
    notify_retract: bool | None


class NodeDirectory(Protocol):
    """The ingest's view of which nodes are synced; the database methods block (run them in a
    worker thread)."""

    def nodes_to_resync(self, account: str) -> list[NodeRef]:
        """Every node of ``account`` to re-read after a connection."""
        ...

    def sync_requests(self, account: str) -> list[SyncRequest]:
        """The sync requests of ``account`` not started yet."""
        ...

    def wants_sync(self, service: str, node: str, payload: str | None) -> bool:
        """Whether a node (with this sample payload, if known) is to be synced."""
        ...

    def pep_notify(self) -> list[str]:
        """The PEP nodes (namespaces) to announce ``+notify`` for."""
        ...

    def node_limits(self, account: str, ref: NodeRef) -> NodeLimits | None:
        """The node's known limits; ``None`` when the read model has no such node."""
        ...

    def cached_item_ids(self, account: str, ref: NodeRef) -> set[str] | None:
        """The ids of the node's cached items; ``None`` when the read model has no such node."""
        ...

    def item_orders(self, account: str, ref: NodeRef) -> tuple[list[str], list[str]]:
        """The node's cached item ids by first and by last publication (oldest first)."""
        ...

    def oldest_item_ids(self, account: str, ref: NodeRef, limit: int) -> list[str]:
        """The ids of the node's ``limit`` oldest cached items, in the service's order."""
        ...


class ReadModelDirectory:
    """:class:`NodeDirectory` over the read model in ``engine`` and an analyser registry."""

    def __init__(
        self, engine: Engine, registry: AnalyserRegistry, *, shared_requests: float = 0.0
    ) -> None:
        """With ``shared_requests`` > 0 (a daemon serving many accounts), :meth:`sync_requests`
        answers every account from one query of all accounts' requests, made at most once per
        that many seconds: 1,000 accounts polling every 2 s would otherwise be 500 queries a
        second on an idle daemon."""
        self._engine = engine
        self._registry = registry
        self._shared_requests = shared_requests
        self._requests_lock = threading.Lock()
        self._requests: dict[str, list[SyncRequest]] = {}
        self._requests_at = float("-inf")

    def nodes_to_resync(self, account: str) -> list[NodeRef]:
        """Nodes of ``account`` that are to be synced and not deleted, that have been synced
        (whatever the outcome: ERROR ones are retried), or whose sync was requested."""
        c = pubsub_node.c
        query = (
            sa.select(c.service, c.node)
            .where(
                c.account == account,
                sa.or_(
                    sa.and_(c.to_sync, sa.not_(c.deleted)),
                    c.sync_state.in_(SYNCED_STATES),
                    c.sync_requested_position.is_not(None),
                ),
            )
            .order_by(c.id)
        )
        with self._engine.connect() as connection:
            return [NodeRef(service, node) for service, node in connection.execute(query)]

    def sync_requests(self, account: str) -> list[SyncRequest]:
        """Nodes of ``account`` with a ``SyncRequested`` that no sync has started since."""
        if self._shared_requests > 0:
            # Called from worker threads, one per account: the first past the deadline asks.
            with self._requests_lock:
                if time.monotonic() - self._requests_at >= self._shared_requests:
                    self._requests = self._every_sync_request()
                    self._requests_at = time.monotonic()
                return list(self._requests.get(account, ()))
        c = pubsub_node.c
        query = (
            sa.select(c.service, c.node, c.sync_requested_position)
            .where(c.account == account, c.sync_requested_position.is_not(None))
            .order_by(c.sync_requested_position)
        )
        with self._engine.connect() as connection:
            return [
                SyncRequest(NodeRef(service, node), int(position))
                for service, node, position in connection.execute(query)
            ]

    def _every_sync_request(self) -> dict[str, list[SyncRequest]]:
        c = pubsub_node.c
        query = (
            sa.select(c.account, c.service, c.node, c.sync_requested_position)
            .where(c.sync_requested_position.is_not(None))
            .order_by(c.sync_requested_position)
        )
        found: defaultdict[str, list[SyncRequest]] = defaultdict(list)
        with self._engine.connect() as connection:
            for account, service, node, position in connection.execute(query):
                found[account].append(SyncRequest(NodeRef(service, node), int(position)))
        return dict(found)

    def wants_sync(self, service: str, node: str, payload: str | None) -> bool:
        """Whether the analyser matching the node says ``to_sync``."""
        analyser = self._registry.match(NodeInfo(service, node, payload_namespace(payload)))
        return analyser is not None and analyser.to_sync

    def pep_notify(self) -> list[str]:
        """The node names of the ``to_sync`` analysers that match on a node name (XEP-0163:
        the ``+notify`` namespace is the PEP node's name), e.g. ``urn:xmpp:microblog:0``."""
        return [
            analyser.node_prefix
            for analyser in self._registry.analysers
            if analyser.to_sync and analyser.node_prefix
        ]

    def node_limits(self, account: str, ref: NodeRef) -> NodeLimits | None:
        """``max_items`` and ``notify_retract`` of the node, as its configuration gave them."""
        c = pubsub_node.c
        query = sa.select(c.max_items, c.notify_retract).where(
            c.account == account, c.service == ref.service, c.node == ref.node
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else NodeLimits(row.max_items, row.notify_retract)

    def cached_item_ids(self, account: str, ref: NodeRef) -> set[str] | None:
        """The item ids the read model holds for the node."""
        node, item = pubsub_node.c, pubsub_item.c
        with self._engine.connect() as connection:
            node_id = connection.execute(
                sa.select(node.id).where(
                    node.account == account, node.service == ref.service, node.node == ref.node
                )
            ).scalar()
            if node_id is None:
                return None
            return set(
                connection.execute(sa.select(item.item_id).where(item.node_id == node_id)).scalars()
            )

    def item_orders(self, account: str, ref: NodeRef) -> tuple[list[str], list[str]]:
        """The node's cached item ids in creation and in modification order."""
        node, item = pubsub_node.c, pubsub_item.c
        query = (
            sa.select(item.item_id, item.creation_rank, item.modification_rank)
            .join_from(pubsub_item, pubsub_node, item.node_id == node.id)
            .where(node.account == account, node.service == ref.service, node.node == ref.node)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        by_creation = [row.item_id for row in sorted(rows, key=lambda r: r.creation_rank)]
        by_modification = [row.item_id for row in sorted(rows, key=lambda r: r.modification_rank)]
        return by_creation, by_modification

    def oldest_item_ids(self, account: str, ref: NodeRef, limit: int) -> list[str]:
        """The ``limit`` first item ids of the node in the service's order."""
        node, item = pubsub_node.c, pubsub_item.c
        query = (
            sa.select(item.item_id)
            .join_from(pubsub_item, pubsub_node, item.node_id == node.id)
            .where(node.account == account, node.service == ref.service, node.node == ref.node)
            .order_by(item.service_rank, item.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return list(connection.execute(query).scalars())
