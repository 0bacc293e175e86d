"""The async query library (anyio on its asyncio backend): cached reads, live fallback, search,
the change feed.

::

    async with Query.open("sqlite:///cache.sqlite3", client=xmpp) as query:  # a ClientXMPP
        page = await query.get_items(account, service, node, rsm=RsmRequest(max=20, before=""))
        async for change in query.watch(account, service, node):
            ...

A node the cache holds completely (COMPLETED, or PARTIAL when the request only needs what is
there) is answered from the read model. Any other node is read live through ``client`` (the
program's own XMPP session, for ``account``: a slixmpp ``ClientXMPP`` or our ``PubsubClient``),
or raises :class:`NotCached` without one. The first read of a node an analyser marks to sync
also records a ``SyncRequested`` event, which the ingest carries out. What a read does is
:class:`~.core.QueryCore`'s; this shell only says where it runs.

Threads: on SQLite, cached reads run in the event loop's thread. They take tens of
microseconds (a page of 20 from a 100k-item node: see ``pubsub-cache bench read``), less than a
hop to a worker thread costs, and WAL readers never wait for the writer. On PostgreSQL they
run in a worker thread, as do searches, waits and appends to the log everywhere.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.to_thread

from pubsub_cache.events.db import is_sqlite

from .core import Database, QueryCore, Source, check_source, for_source
from .model import NodeState, Page, PageItem, RsmRequest, SearchResult
from .nodes import LIVE_PROJECTOR, list_nodes, node_state

if TYPE_CHECKING:
    from slixmpp import ClientXMPP
    from sqlalchemy.engine import Engine

    from pubsub_cache.events.log import EventLog
    from pubsub_cache.projector.analysers import AnalyserRegistry
    from pubsub_cache.xmpp.pubsub import PubsubClient

    from .cache import CacheAnswer
    from .filters import Filter
    from .watch import Change

T = TypeVar("T")

#: Seconds a change feed waits in a worker thread before it looks again.
WATCH_SLICE = 1.0


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
        source: Source = "auto",
    ) -> Page:
        """A page of the node's items as ``account`` sees them (see :class:`Page`).

        The result set is the node's items in ``order_by`` (oldest first; by default the order
        the service itself answers in), restricted to ``item_ids`` when given, then to the
        newest ``max_items``; ``rsm`` pages through it. ``Page.order`` names the order the items
        are in (a live read can only give the service's). ``source="live"`` reads live even
        when the cache could answer (Libervia's ``--no-cache``).
        """
        check_source(source)
        answer = await self.cached_items(
            account,
            service,
            node,
            item_ids=item_ids,
            max_items=max_items,
            rsm=rsm,
            order_by=order_by,
        )
        answer = for_source(answer, source)
        if answer.page is not None:
            return answer.page
        return await self._core.live_items(
            self.client,
            answer,
            account,
            service,
            node,
            item_ids=item_ids,
            max_items=max_items,
            rsm=rsm,
            order_by=order_by,
            timeout=self.live_timeout,
        )

    async def cached_items(
        self,
        account: str,
        service: str,
        node: str,
        *,
        item_ids: Sequence[str] | None = None,
        max_items: int | None = None,
        rsm: RsmRequest | None = None,
        order_by: str = "service",
    ) -> CacheAnswer:
        """The cache's own answer to :meth:`get_items` (never live): a page, or why not."""
        return await self._read(
            self._core.cached_items,
            account,
            service,
            node,
            item_ids=item_ids,
            max_items=max_items,
            rsm=rsm,
            order_by=order_by,
        )

    async def request_sync(
        self, answer: CacheAnswer, account: str, service: str, node: str, namespace: str | None
    ) -> bool:
        """After a read the cache could not answer (``answer``) and that was answered elsewhere
        (payloads in ``namespace``): ask for the node's sync if it is one to sync; returns
        whether a sync of it is pending."""
        core = self._core
        return await self._write(core.request_sync, account, service, node, answer.node, namespace)

    async def get_item(
        self, account: str, service: str, node: str, item_id: str
    ) -> PageItem | None:
        """One item, or ``None`` when the node does not hold it."""
        core = self._core
        row, item, reason = await self._read(core.cached_item, account, service, node, item_id)
        if reason is None:
            return item
        return await core.live_item(
            self.client, row, reason, account, service, node, item_id, timeout=self.live_timeout
        )

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
        return await self._blocking(
            functools.partial(self._core.wait_for, position, timeout, projector=projector)
        )

    async def watch(
        self,
        account: str,
        service: str | None = None,
        node: str | None = None,
        after: int | None = None,
        *,
        projector: str | None = LIVE_PROJECTOR,
    ) -> AsyncGenerator[Change, None]:
        """The read model's changes of ``account`` (of ``service``, of ``node``), in log order,
        each once ``projector`` applied it (see :mod:`.watch`): those after position ``after``,
        or from now on. Never ends; woken by the log."""
        from .watch import ChangeFeed  # a cached read does not pay for it (bench cli)

        feed = ChangeFeed(
            self.engine,
            self._core.event_log(),
            account,
            service=service,
            node=node,
            projector=projector,
        )
        position = await self._read(feed.start, after)
        while True:
            changes, position = await self._blocking(
                functools.partial(feed.next, position, timeout=WATCH_SLICE)
            )
            for change in changes:
                yield change

    async def search(
        self,
        account: str,
        *,
        filters: Iterable[Filter] = (),
        text: str | None = None,
        service: str | Sequence[str] | None = None,
        node: str | Sequence[str] | None = None,
        type: str | Sequence[str] | None = None,
        subtype: str | Sequence[str] | None = None,
        published_after: datetime | None = None,
        published_before: datetime | None = None,
        order_by: str | Sequence[str] = "-publication",
        limit: int = 20,
        offset: int = 0,
    ) -> SearchResult:
        """Search the account's cached items (see :mod:`pubsub_cache.query.search`)."""
        from .search import search

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

    async def _blocking(self, wait: Callable[..., T]) -> T:
        # A wait in a worker thread that a cancellation ends (``stop``) rather than abandons.
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(wait, stop=stop), abandon_on_cancel=True
            )
        finally:
            stop.set()

    async def _read(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._inline:
            return function(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))

    async def _write(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))
