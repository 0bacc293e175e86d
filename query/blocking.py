"""The query library for synchronous programs: the methods of :class:`~.api.Query`, blocking.

::

    with BlockingQuery.open("sqlite:///cache.sqlite3") as query:        # cached reads only
        page = query.get_items(account, service, node, max_items=20)

    connect = lambda: session(jid, password, host="127.0.0.1", tls="none")
    with BlockingQuery.open(url, connect=connect) as query:            # with live reads
        ...

Cached reads and searches run in the caller's thread, with no event loop. Live reads (slixmpp
is asyncio only) go through an anyio blocking portal: a thread running an asyncio loop in which
the XMPP session was opened.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .api import Query
from .core import Database
from .errors import ProjectionTimeout
from .filters import Filter
from .model import NodeState, Page, PageItem, RsmRequest, SearchResult
from .nodes import LIVE_PROJECTOR, checkpoint_position, list_nodes, node_state
from .rows import NodeRow
from .search import search

if TYPE_CHECKING:
    from pubsub_cache.xmpp.pubsub import PubsubClient

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
        **options: Any,
    ) -> None:
        if client is not None and portal is None:
            raise ValueError("a live client needs the blocking portal its session runs in")
        self._query = Query(database, client=client, **options)
        self._core = self._query._core
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
    def engine(self) -> Any:
        """The database the read model is in."""
        return self._core.engine

    def close(self) -> None:
        """Release the connections this object opened."""
        self._query.close()

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
    ) -> Page:
        """As :meth:`Query.get_items <pubsub_cache.query.api.Query.get_items>`."""
        answer = self._core.cached_items(
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
        call = functools.partial(
            self._query.get_items,
            account,
            service,
            node,
            item_ids=item_ids,
            max_items=max_items,
            rsm=rsm,
            order_by=order_by,
        )
        return self._live(call, account, service, node, answer.node, answer.reason)

    def get_item(self, account: str, service: str, node: str, item_id: str) -> PageItem | None:
        """As :meth:`Query.get_item <pubsub_cache.query.api.Query.get_item>`."""
        row, item, reason = self._core.cached_item(account, service, node, item_id)
        if reason is None:
            return item
        call = functools.partial(self._query.get_item, account, service, node, item_id)
        return self._live(call, account, service, node, row, reason)

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
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            reached = checkpoint_position(self.engine, projector)
            if reached is not None and reached >= position:
                return reached
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProjectionTimeout(position, reached=reached, seconds=timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

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
        call: Callable[[], Awaitable[T]],
        account: str,
        service: str,
        node: str,
        row: NodeRow | None,
        reason: str | None,
    ) -> T:
        client, why = self._core.live_client(self._query.client, account)
        if client is None or self._portal is None:
            raise self._core.not_cached(account, service, node, row, reason or "not cached", why)
        return self._portal.call(call)
