"""The query library for synchronous programs: the methods of :class:`~.api.Query`, blocking.

::

    with BlockingQuery.open("sqlite:///cache.sqlite3") as query:        # cached reads only
        page = query.get_items(account, service, node, max_items=20)

    connect = lambda: session(jid, password, host="127.0.0.1", tls="none")
    with BlockingQuery.open(url, connect=connect) as query:            # with live reads
        ...

A thin shell over :class:`~.core.QueryCore`, which does what :class:`~.api.Query` does: cached
reads, searches, waits and the change feed run in the caller's thread, with no event loop. Live
reads (slixmpp is asyncio only) go through an anyio blocking portal: a thread running an
asyncio loop in which the XMPP session was opened.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Engine

from .api import WATCH_SLICE, as_pubsub_client
from .core import Database, QueryCore, Source, check_source, for_source
from .model import NodeState, Page, PageItem, RsmRequest, SearchResult
from .nodes import LIVE_PROJECTOR, list_nodes, node_state
from .rows import NodeRow

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from pubsub_cache.xmpp.pubsub import PubsubClient

    from .filters import Filter
    from .watch import Change

# The thread portal, the search and the change feed are imported by the methods that use them:
# a command that only reads the cache (``pubsub-cache purge``, ``nodes``...) starts without them.

Connect = Callable[[], AbstractAsyncContextManager["PubsubClient"]]
T = TypeVar("T")


class BlockingQuery:
    """Blocking reads of the cache; live reads when opened with a portal and a client."""

    def __init__(
        self,
        database: Database,
        *,
        client: PubsubClient | None = None,
        portal: BlockingPortal | None = None,
        live_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        if client is not None and portal is None:
            raise ValueError("a live client needs the blocking portal its session runs in")
        self._core = QueryCore(database, **options)
        self.client = as_pubsub_client(client)
        self.live_timeout = live_timeout
        self._portal = portal

    @classmethod
    @contextmanager
    def open(
        cls, database: Database, *, connect: Connect | None = None, **options: Any
    ) -> Iterator[BlockingQuery]:
        """A blocking query object; with ``connect`` (a function returning the async context
        manager of an XMPP session), live reads through that session."""
        if connect is None:
            query = cls(database, **options)
            try:
                yield query
            finally:
                query.close()
            return
        from anyio.from_thread import start_blocking_portal

        with (
            start_blocking_portal("asyncio") as portal,
            portal.wrap_async_context_manager(connect()) as client,
        ):
            query = cls(database, client=client, portal=portal, **options)
            try:
                yield query
            finally:
                query.close()

    @property
    def engine(self) -> Engine:
        """The database the read model is in."""
        return self._core.engine

    def close(self) -> None:
        """Release the connections this object opened."""
        self._core.close()

    def get_items(
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
        """As :meth:`Query.get_items <pubsub_cache.query.api.Query.get_items>`."""
        check_source(source)
        request: dict[str, Any] = {
            "item_ids": item_ids,
            "max_items": max_items,
            "rsm": rsm,
            "order_by": order_by,
        }
        core = self._core
        answer = for_source(core.cached_items(account, service, node, **request), source)
        if answer.page is not None:
            return answer.page
        read = functools.partial(
            core.live_items, self.client, answer, account, service, node, **request
        )
        return self._live(read, account, service, node, answer.node, answer.reason)

    def get_item(self, account: str, service: str, node: str, item_id: str) -> PageItem | None:
        """As :meth:`Query.get_item <pubsub_cache.query.api.Query.get_item>`."""
        core = self._core
        row, item, reason = core.cached_item(account, service, node, item_id)
        if reason is None:
            return item
        read = functools.partial(
            core.live_item, self.client, row, reason, account, service, node, item_id
        )
        return self._live(read, account, service, node, row, reason)

    def nodes(self, account: str, **filters: Any) -> list[NodeState]:
        """As :meth:`Query.nodes <pubsub_cache.query.api.Query.nodes>`."""
        return list_nodes(self.engine, account, **filters)

    def node_state(self, account: str, service: str, node: str) -> NodeState | None:
        """As :meth:`Query.node_state <pubsub_cache.query.api.Query.node_state>`."""
        return node_state(self.engine, account, service, node)

    def wait_for(
        self, position: int, timeout: float = 10.0, *, projector: str | None = LIVE_PROJECTOR
    ) -> int:
        """As :meth:`Query.wait_for <pubsub_cache.query.api.Query.wait_for>`."""
        return self._core.wait_for(position, timeout, projector=projector)

    def watch(
        self,
        account: str,
        service: str | None = None,
        node: str | None = None,
        after: int | None = None,
        *,
        projector: str | None = LIVE_PROJECTOR,
    ) -> Generator[Change, None, None]:
        """As :meth:`Query.watch <pubsub_cache.query.api.Query.watch>`: a plain iterator."""
        from .watch import ChangeFeed

        feed = ChangeFeed(
            self.engine,
            self._core.event_log(),
            account,
            service=service,
            node=node,
            projector=projector,
        )
        position = feed.start(after)
        while True:
            changes, position = feed.next(position, timeout=WATCH_SLICE)
            yield from changes

    def search(
        self,
        account: str,
        *,
        filters: Iterable[Filter] = (),
        text: str | None = None,
        published_after: datetime | None = None,
        published_before: datetime | None = None,
        **options: Any,
    ) -> SearchResult:
        """As :meth:`Query.search <pubsub_cache.query.api.Query.search>`."""
        from .search import search

        return search(
            self.engine,
            account,
            filters=filters,
            text=text,
            published_after=published_after,
            published_before=published_before,
            **options,
        )

    def _live(
        self,
        read: Callable[..., Awaitable[T]],
        account: str,
        service: str,
        node: str,
        row: NodeRow | None,
        reason: str | None,
    ) -> T:
        # The live half runs in the loop the session lives in; without one, it would only
        # raise NotCached, which needs no loop.
        if self._portal is None:
            raise self._core.not_cached(account, service, node, row, reason or "not cached", "")
        return self._portal.call(functools.partial(read, timeout=self.live_timeout))
