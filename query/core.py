"""What the async and the blocking query facades share: the cache reader, the analysers that say
which nodes are synced, and the sync requests a read records.

Everything here is synchronous; the facades decide which thread it runs on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from pubsub_cache.projector.analysers import AnalyserRegistry, NodeInfo, default_registry
from pubsub_cache.projector.parsers import Parser

from .cache import CacheAnswer, CacheReader
from .errors import InvalidOrder, InvalidQuery, NotCached
from .model import ORDERS, Order, PageItem, RsmRequest
from .nodes import configured_max_items, node_state
from .rows import NodeRow

if TYPE_CHECKING:
    from pubsub_cache.xmpp.pubsub import PubsubClient

Database = str | URL | Engine

SYNC_REASON = "first read of a node to sync (query library)"


class QueryCore:
    """The synchronous half of a query facade, bound to one database."""

    def __init__(
        self,
        database: Database,
        *,
        registry: AnalyserRegistry | None = None,
        event_log: EventLog | None = None,
    ) -> None:
        self.owns_engine = not isinstance(database, Engine)
        self.engine = create_engine(database) if not isinstance(database, Engine) else database
        self.reader = CacheReader(self.engine)
        self._registry = registry
        self._log = event_log
        self._owns_log = event_log is None
        self._requested: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    @property
    def registry(self) -> AnalyserRegistry:
        """The analysers (built on first use: loading entry points is not free)."""
        if self._registry is None:
            self._registry = default_registry()
        return self._registry

    def cached_items(
        self,
        account: str,
        service: str,
        node: str,
        *,
        item_ids: Sequence[str] | None,
        max_items: int | None,
        rsm: RsmRequest | None,
        order_by: str,
    ) -> CacheAnswer:
        """The cache's page, or why the cache cannot answer."""
        order = check_order(order_by)
        if max_items is not None and (type(max_items) is not int or max_items < 0):
            raise InvalidQuery(f"max_items must be a non-negative integer, got {max_items!r}")
        if isinstance(item_ids, str):
            raise InvalidQuery("item_ids must be a list of item ids, not one string")
        return self.reader.items(
            account,
            service,
            node,
            order=order,
            rsm=rsm,
            item_ids=item_ids,
            max_items=max_items,
        )

    def cached_item(
        self, account: str, service: str, node: str, item_id: str
    ) -> tuple[NodeRow | None, PageItem | None, str | None]:
        """(node, item, None) when the cache's answer holds, else (node, None, why not)."""
        row, item = self.reader.item(account, service, node, item_id)
        if row is None:
            return None, None, "never seen by this account"
        if row.sync_state == "COMPLETED" or (row.sync_state == "PARTIAL" and item is not None):
            return row, item, None
        return row, None, f"sync state {row.sync_state}"

    def live_client(
        self, client: PubsubClient | None, account: str
    ) -> tuple[PubsubClient | None, str]:
        """The session to read live for ``account``, or ``None`` and why there is none."""
        if client is None:
            return None, ""
        if client.jid != account:
            return None, f"the live session is {client.jid}'s"
        return client, ""

    def not_cached(
        self, account: str, service: str, node: str, row: NodeRow | None, reason: str, why: str
    ) -> NotCached:
        """The error for a read the cache cannot answer without a live session (after asking
        for a sync when the node is one to sync)."""
        requested = self.request_sync(account, service, node, row, None)
        reason = f"{reason}; {why}" if why else reason
        return NotCached(account, service, node, reason=reason, sync_requested=requested)

    def request_sync(
        self, account: str, service: str, node: str, row: NodeRow | None, namespace: str | None
    ) -> bool:
        """Record a sync request if the node is one to sync and none is pending; returns whether
        a sync of the node is now pending."""
        key = (account, service, node)
        if row is not None and (row.sync_requested or row.sync_state != "NONE"):
            with self._lock:
                self._requested.discard(key)
            return row.sync_requested
        to_sync = row is not None and row.to_sync
        if not to_sync:
            analyser = self.registry.match(NodeInfo(service, node, namespace))
            to_sync = analyser is not None and analyser.to_sync
        if not to_sync:
            return False
        with self._lock:
            if key in self._requested:
                return True
            self._requested.add(key)
        event = SyncRequested(
            account=account,
            service=service,
            node=node,
            observed_at=datetime.now(UTC),
            reason=SYNC_REASON,
        )
        try:
            self.event_log().append([event])
        except BaseException:
            with self._lock:
                self._requested.discard(key)
            raise
        return True

    def parser_for(self, service: str, node: str, namespace: str | None) -> Parser | None:
        """The parser the projector would use for the node's payloads."""
        analyser = self.registry.match(NodeInfo(service, node, namespace))
        return analyser.parser if analyser is not None else None

    def max_items_of(self, account: str, service: str, node: str) -> int | None:
        """The node's configured ``max_items``, when the cache knows it."""
        return configured_max_items(node_state(self.engine, account, service, node))

    def event_log(self) -> EventLog:
        """The log sync requests are appended to."""
        if self._log is None:
            self._log = EventLog(self.engine)
        return self._log

    def close(self) -> None:
        """Release what this object opened (not an engine or log it was given)."""
        self.reader.close()
        if self._owns_log and self._log is not None:
            self._log.close()
        if self.owns_engine:
            self.engine.dispose()


def check_order(order_by: str) -> Order:
    """``order_by`` if it names an order of ``get_items``."""
    for order in ORDERS:
        if order_by == order:
            return order
    raise InvalidOrder(str(order_by), f"get_items orders by one of {', '.join(ORDERS)}")
