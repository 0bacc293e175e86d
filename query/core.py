"""The query library's one implementation; :class:`~.api.Query` (async) and
:class:`~.blocking.BlockingQuery` are shells that only decide where it runs.

The cached half of every read is synchronous (the facades decide which thread it runs on): the
cache reader, the analysers that say which nodes are synced, the sync requests a read records,
the wait for the projector. The live half (:meth:`QueryCore.live_items`,
:meth:`QueryCore.live_item`) is a coroutine: the async facade awaits it, the blocking one runs it
in the event loop its XMPP session lives in.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
from sqlalchemy.engine import URL, Engine

from pubsub_cache import telemetry
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested

from .cache import CacheAnswer, CacheReader
from .errors import InvalidOrder, InvalidQuery, NotCached, ProjectionTimeout
from .model import ORDERS, Order, Page, PageItem, RsmRequest
from .nodes import LIVE_PROJECTOR, checkpoint_position, configured_max_items, node_state
from .rows import NodeRow

#: Where a read may come from: ``auto`` (the cache when it can answer, else live) or ``live``
#: (always from the service, Libervia's ``--no-cache``).
Source = Literal["auto", "live"]
SOURCES: tuple[Source, ...] = ("auto", "live")


def check_source(source: str) -> None:
    """Refuse a ``source`` that is not one of :data:`SOURCES`."""
    if source not in SOURCES:
        raise InvalidQuery(f"source is one of {', '.join(SOURCES)}, got {source!r}")


def for_source(answer: CacheAnswer, source: Source) -> CacheAnswer:
    """``answer`` as the read must take it: a cached page is set aside when ``source`` is live."""
    if answer.page is None or source == "auto":
        return answer
    return CacheAnswer(answer.node, None, "a live read was asked for")


if TYPE_CHECKING:
    from pubsub_cache.projector.analysers import AnalyserRegistry
    from pubsub_cache.projector.parsers import Parser
    from pubsub_cache.xmpp.pubsub import PubsubClient

# Analysers, parsers (lxml) and the live half are imported where a live answer or a sync
# request needs them: a cached read does without (pubsub-cache bench cli).

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
            from pubsub_cache.projector.analysers import default_registry

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
        started = time.perf_counter()
        answer = self.reader.items(
            account,
            service,
            node,
            order=order,
            rsm=rsm,
            item_ids=item_ids,
            max_items=max_items,
        )
        telemetry.current().queried("items", time.perf_counter() - started)
        return answer

    def cached_item(
        self, account: str, service: str, node: str, item_id: str
    ) -> tuple[NodeRow | None, PageItem | None, str | None]:
        """(node, item, None) when the cache's answer holds, else (node, None, why not)."""
        started = time.perf_counter()
        row, item = self.reader.item(account, service, node, item_id)
        telemetry.current().queried("item", time.perf_counter() - started)
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
            from pubsub_cache.projector.analysers import NodeInfo

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

    async def live_items(
        self,
        client: PubsubClient | None,
        answer: CacheAnswer,
        account: str,
        service: str,
        node: str,
        *,
        item_ids: Sequence[str] | None,
        max_items: int | None,
        rsm: RsmRequest | None,
        order_by: str,
        timeout: float,
    ) -> Page:
        """The live half of ``get_items``, for a node the cache could not answer (``answer``):
        the node read through ``client`` (:class:`NotCached` without one for ``account``), and
        a sync requested when the node is one to sync."""
        from .live import fetch_node, live_page

        run = anyio.to_thread.run_sync
        live_client, why = self.live_client(client, account)
        if live_client is None:
            reason = answer.reason or "not cached"
            raise await run(self.not_cached, account, service, node, answer.node, reason, why)
        telemetry.current().went_live("items")
        cap = None
        if answer.node is not None:
            cap = await run(self.max_items_of, account, service, node)
        live = await fetch_node(live_client, service, node, timeout=timeout, max_items=cap)
        namespace = live.namespace
        requested = await run(self.request_sync, account, service, node, answer.node, namespace)
        build = functools.partial(
            live_page,
            live,
            self.parser_for(service, node, namespace),
            service=service,
            node=node,
            order=check_order(order_by),
            service_order=answer.node.item_order if answer.node is not None else None,
            rsm=rsm,
            item_ids=item_ids,
            max_items=max_items,
            sync_requested=requested,
        )
        if len(live.items) > 64:  # parsing a large node is worth a thread
            return await run(build)
        return build()

    async def live_item(
        self,
        client: PubsubClient | None,
        row: NodeRow | None,
        reason: str,
        account: str,
        service: str,
        node: str,
        item_id: str,
        *,
        timeout: float,
    ) -> PageItem | None:
        """The live half of ``get_item`` (as :meth:`live_items`)."""
        from pubsub_cache.projector.payloads import payload_namespace

        from .live import fetch_item, live_item

        run = anyio.to_thread.run_sync
        live_client, why = self.live_client(client, account)
        if live_client is None:
            raise await run(self.not_cached, account, service, node, row, reason, why)
        telemetry.current().went_live("item")
        found = await fetch_item(live_client, service, node, item_id, timeout=timeout)
        namespace = payload_namespace(found.payload) if found is not None else None
        await run(self.request_sync, account, service, node, row, namespace)
        if found is None:
            return None
        return live_item(found, self.parser_for(service, node, namespace), time.time())[0]

    def wait_for(
        self,
        position: int,
        timeout: float,
        *,
        projector: str | None = LIVE_PROJECTOR,
        stop: threading.Event | None = None,
    ) -> int:
        """Block until every checkpoint of ``projector`` reached ``position``; returns the
        position reached, or raises :class:`ProjectionTimeout` (also when ``stop`` is set)."""
        # The checkpoint row is polled: the projector announces nothing (the log does).
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            reached = checkpoint_position(self.engine, projector)
            if reached is not None and reached >= position:
                return reached
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                raise ProjectionTimeout(position, reached=reached, seconds=timeout)
            stop.wait(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def parser_for(self, service: str, node: str, namespace: str | None) -> Parser | None:
        """The parser the projector would use for the node's payloads."""
        from pubsub_cache.projector.analysers import NodeInfo

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
