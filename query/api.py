"""The async query library (anyio on its asyncio backend): cached reads, live fallback, search.

::

    async with Query.open("sqlite:///cache.sqlite3", client=xmpp) as query:  # a ClientXMPP
        page = await query.get_items(account, service, node, rsm=RsmRequest(max=20, before=""))

A node the cache holds completely (COMPLETED, or PARTIAL when the request only needs what is
there) is answered from the read model. Any other node is read live through ``client`` (the
program's own XMPP session, for ``account``: a slixmpp ``ClientXMPP`` or our ``PubsubClient``),
or raises :class:`NotCached` without one. The first read of a node an analyser marks to sync
also records a ``SyncRequested`` event, which the daemon carries out.

Threads: on SQLite, cached reads run in the event loop's thread. They take tens of
microseconds (a page of 20 from a 100k-item node: see ``pubsub-cache bench read``), less than a
hop to a worker thread costs, and WAL readers never wait for the writer. On PostgreSQL they
run in a worker thread, as do searches and appends to the log everywhere.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio

from pubsub_cache.events.db import is_sqlite
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.payloads import payload_namespace

from .core import Database, QueryCore, check_order
from .errors import ProjectionTimeout
from .filters import Filter
from .live import fetch_item, fetch_node, live_item, live_page
from .model import NodeState, Page, PageItem, RsmRequest, SearchResult
from .nodes import LIVE_PROJECTOR, checkpoint_position, list_nodes, node_state
from .search import search

if TYPE_CHECKING:
    from slixmpp import ClientXMPP
    from sqlalchemy.engine import Engine

    from pubsub_cache.xmpp.pubsub import PubsubClient

T = TypeVar("T")


def as_pubsub_client(client: PubsubClient | ClientXMPP | None) -> PubsubClient | None:
    """The program's session as the typed client live reads use: a slixmpp ``ClientXMPP`` (what
    a slixmpp program has) is wrapped; the project's own ``PubsubClient`` is used as it is."""
    if client is None:
        return None
    from pubsub_cache.xmpp.pubsub import PubsubClient  # slixmpp only for programs that have it

    return client if isinstance(client, PubsubClient) else PubsubClient(client)


class Query:
    """Reads of the cache for client programs; ``client`` enables live reads for its account."""

    def __init__(
        self,
        database: Database,
        *,
        client: PubsubClient | ClientXMPP | None = None,
        registry: AnalyserRegistry | None = None,
        event_log: EventLog | None = None,
        live_timeout: float = 10.0,
        inline_reads: bool | None = None,
    ) -> None:
        self._core = QueryCore(database, registry=registry, event_log=event_log)
        self.client = as_pubsub_client(client)
        self.live_timeout = live_timeout
        self._inline = is_sqlite(self._core.engine) if inline_reads is None else inline_reads

    @classmethod
    def open(cls, database: Database, **options: Any) -> Query:
        """A query object on a database URL or engine (an engine it builds, it disposes of)."""
        return cls(database, **options)

    @property
    def engine(self) -> Engine:
        """The database the read model is in."""
        return self._core.engine

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections this object opened."""
        self._core.close()

    async def get_items(
        self,
        account: str,
        service: str,
        node: str,
        *,
        item_ids: Sequence[str] | None = None,
        max_items: int | None = None,
        rsm: RsmRequest | None = None,
        order_by: str = "service",
    ) -> Page:
        """A page of the node's items as ``account`` sees them (see :class:`Page`).

        The result set is the node's items in ``order_by`` (oldest first; by default the order
        the service itself answers in), restricted to ``item_ids`` when given, then to the
        newest ``max_items``; ``rsm`` pages through it. ``Page.order`` names the order the items
        are in (a live read can only give the service's).
        """
        core = self._core
        answer = await self._read(
            core.cached_items,
            account,
            service,
            node,
            item_ids=item_ids,
            max_items=max_items,
            rsm=rsm,
            order_by=order_by,
        )
        if answer.page is not None:
            return answer.page
        client, why = core.live_client(self.client, account)
        reason = answer.reason or "not cached"
        if client is None:
            raise await self._write(
                core.not_cached, account, service, node, answer.node, reason, why
            )
        cap = None
        if answer.node is not None:
            cap = await self._read(core.max_items_of, account, service, node)
        live = await fetch_node(client, service, node, timeout=self.live_timeout, max_items=cap)
        namespace = live.namespace
        requested = await self._write(
            core.request_sync, account, service, node, answer.node, namespace
        )
        build = functools.partial(
            live_page,
            live,
            core.parser_for(service, node, namespace),
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
            return await anyio.to_thread.run_sync(build)
        return build()

    async def get_item(
        self, account: str, service: str, node: str, item_id: str
    ) -> PageItem | None:
        """One item, or ``None`` when the node does not hold it."""
        core = self._core
        row, item, reason = await self._read(core.cached_item, account, service, node, item_id)
        if reason is None:
            return item
        client, why = core.live_client(self.client, account)
        if client is None:
            raise await self._write(core.not_cached, account, service, node, row, reason, why)
        found = await fetch_item(client, service, node, item_id, timeout=self.live_timeout)
        namespace = payload_namespace(found.payload) if found is not None else None
        await self._write(core.request_sync, account, service, node, row, namespace)
        if found is None:
            return None
        return live_item(found, core.parser_for(service, node, namespace), time.time())[0]

    async def nodes(
        self,
        account: str,
        *,
        service: str | None = None,
        type: str | None = None,
        subtype: str | None = None,
        sync_state: str | None = None,
        to_sync: bool | None = None,
        include_deleted: bool = False,
    ) -> list[NodeState]:
        """The account's cached nodes matching every filter given."""
        return await self._read(
            list_nodes,
            self.engine,
            account,
            service=service,
            type=type,
            subtype=subtype,
            sync_state=sync_state,
            to_sync=to_sync,
            include_deleted=include_deleted,
        )

    async def node_state(self, account: str, service: str, node: str) -> NodeState | None:
        """What the cache knows of one node, or ``None``."""
        return await self._read(node_state, self.engine, account, service, node)

    async def wait_for(
        self, position: int, timeout: float = 10.0, *, projector: str | None = LIVE_PROJECTOR
    ) -> int:
        """Wait until the read model reflects the log up to ``position`` (read-your-writes):
        every checkpoint of ``projector`` (the live one, ``main``, and its partitions) reached
        it. Returns the position reached, or raises :class:`ProjectionTimeout`."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            reached = await self._read(checkpoint_position, self.engine, projector)
            if reached is not None and reached >= position:
                return reached
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProjectionTimeout(position, reached=reached, seconds=timeout)
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    async def search(
        self,
        account: str,
        *,
        filters: Iterable[Filter] = (),
        text: str | None = None,
        service: str | None = None,
        node: str | None = None,
        type: str | None = None,
        subtype: str | None = None,
        published_after: datetime | None = None,
        published_before: datetime | None = None,
        order_by: str | Sequence[str] = "-publication",
        limit: int = 20,
        offset: int = 0,
    ) -> SearchResult:
        """Search the account's cached items (see :mod:`pubsub_cache.query.search`)."""
        run = functools.partial(
            search,
            self.engine,
            account,
            filters=list(filters),
            text=text,
            service=service,
            node=node,
            type=type,
            subtype=subtype,
            published_after=published_after,
            published_before=published_before,
            order_by=order_by,
            limit=limit,
            offset=offset,
        )
        return await anyio.to_thread.run_sync(run)

    async def _read(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._inline:
            return function(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))

    async def _write(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))
