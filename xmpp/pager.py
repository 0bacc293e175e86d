"""Fetching every item of a node, page by page, and knowing whether that was every item.

Our own pager: slixmpp's RSM iterator swallows errors, fixes the page size and yields nothing
against Prosody (which ignores RSM). Errors propagate (:class:`XmppRequestError`,
:class:`XmppTimeout`, :class:`XmppProtocolError`); a fetch is never silently short (invariant 6).

::

    fetch = fetch_all(client, service, node, page_size=100)
    async for page in fetch:
        ...                                  # page.items, in the order the server sent them
    fetch.outcome.complete                   # known once the iteration is exhausted

Completeness rule (what :attr:`FetchOutcome.complete` means)
-------------------------------------------------------------
Every request carries RSM ``<set><max>m</max></set>`` with ``m = min(page_size, limit left)``,
and never the XEP-0060 ``max_items`` attribute (which would cap servers that do not page).

*Server pages* (the first reply has ``<set/>``): request again with ``<after>`` = the page's
``<last>`` until one of:

- a page is empty, or ``<count>`` is known and reached: **complete**;
- ``limit`` items were fetched: complete only if ``<count>`` is known and reached, otherwise
  **partial** ("limit of L items reached");
- a page has items but no ``<last>``, or a later reply comes back without ``<set/>`` and with
  items: **partial** (we cannot ask for what follows);
- a page's ``<last>`` equals the previous one: :class:`XmppProtocolError` (it would never end).

*Server does not page* (the first reply has no ``<set/>``, Prosody 0.12): that reply is the
whole answer, one page, however large (``page_size`` cannot apply). With ``n`` items:

- ``limit`` given and ``n > limit``: only ``limit`` items are yielded: **partial**;
- ``n == m``: **partial**, the server may have honoured ``<max>`` without saying so;
- ``max_items`` (the node's configured cap, when the caller knows it) given and ``n >= max_items``:
  **partial**, the reply may be capped by the node's or the server's limit;
- otherwise **complete**.

Either way, an item the reply holds but no event may (over the event limits, see
:attr:`ItemsReply.refused`) is left out and makes the fetch **partial**, with the reason: the
cache cannot hold every item of the node.

So with Prosody a node is complete when it holds fewer items than its ``max_items`` (when known)
and a number other than the requested page size.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec

from pubsub_cache.events.types import Item

from .errors import XmppProtocolError
from .pubsub import OnResult, PubsubClient
from .stanzas import ItemsReply


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One reply of the server: its items in the server's order, and its RSM cursors."""

    index: int
    """0 for the first page."""
    items: list[Item]
    paged: bool
    """Whether the reply carried an RSM ``<set/>``."""
    rsm_first: str | None = None
    rsm_last: str | None = None
    rsm_count: int | None = None


class FetchOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a fetch ended: ``complete`` only when every item of the node was fetched."""

    complete: bool
    reason: str | None
    """Why it is not complete; ``None`` when it is."""
    item_count: int
    page_count: int


class FetchNotFinished(RuntimeError):
    """Raised when :attr:`NodeFetch.outcome` is read before the pages were exhausted."""


class NodeFetch:
    """An async iterator of :class:`Page`; :attr:`outcome` is set once it is exhausted."""

    def __init__(
        self,
        client: PubsubClient,
        service: str,
        node: str,
        *,
        page_size: int,
        limit: int | None,
        max_items: int | None,
        timeout: float | None,
        on_reply: OnResult | None = None,
    ) -> None:
        if page_size < 1 or (limit is not None and limit < 1):
            raise ValueError(f"page_size ({page_size}) and limit ({limit}) must be at least 1")
        self.service = service
        self.node = node
        self._client = client
        self._page_size = page_size
        self._limit = limit
        self._max_items = max_items
        self._timeout = timeout
        self._on_reply = on_reply
        self._outcome: FetchOutcome | None = None
        self._refused: list[str] = []
        self._pages = self._run()

    @property
    def outcome(self) -> FetchOutcome:
        """How the fetch ended; raises :class:`FetchNotFinished` before the last page."""
        if self._outcome is None:
            raise FetchNotFinished(
                f"the fetch of node {self.node!r} of {self.service} has not run to its end"
            )
        return self._outcome

    def __aiter__(self) -> NodeFetch:
        return self

    async def __anext__(self) -> Page:
        return await self._pages.__anext__()

    async def aclose(self) -> None:
        """Stop early (``outcome`` then stays unknown)."""
        await self._pages.aclose()

    async def _run(self) -> AsyncGenerator[Page, None]:
        total = 0
        after: str | None = None
        index = 0
        while True:
            want = (
                self._page_size
                if self._limit is None
                else min(self._page_size, self._limit - total)
            )
            reply = await self._client.get_items(
                self.service,
                self.node,
                max=want,
                after=after,
                timeout=self._timeout,
                on_result=self._on_reply,
            )
            items = reply.items
            self._refused += reply.refused
            listed = len(reply.items) + len(reply.refused)  # what the server sent
            if reply.rsm is None and index == 0:
                if self._limit is not None and len(items) > self._limit:
                    items = items[: self._limit]
                yield _page(index, items, reply)
                self._finish(len(items), 1, self._unpaged_reason(listed, want))
                return
            if reply.rsm is None:  # a server that paged, then stopped paging
                if items:
                    yield _page(index, items, reply)
                reason = f"server stopped paging (no RSM) after page {index}" if items else None
                self._finish(total + len(items), index + bool(items), reason)
                return
            if self._limit is not None:
                items = items[: self._limit - total]  # a server may send more than <max>
            yield _page(index, items, reply)
            total += len(items)
            index += 1
            count = reply.rsm.count
            if not listed or (count is not None and total + len(self._refused) >= count):
                self._finish(total, index, None)
                return
            if self._limit is not None and total >= self._limit:
                self._finish(total, index, f"limit of {self._limit} items reached")
                return
            if reply.rsm.last is None:
                self._finish(total, index, f"page {index - 1} has items but no RSM <last>")
                return
            if reply.rsm.last == after:
                reason = f"RSM cursor {after!r} did not advance after page {index - 1}"
                raise XmppProtocolError(
                    "fetch items", service=self.service, node=self.node, reason=reason
                )
            after = reply.rsm.last

    def _unpaged_reason(self, n: int, want: int) -> str | None:
        no_rsm = f"server does not page (no RSM); {n} items returned"
        if self._limit is not None and n > self._limit:
            return f"limit of {self._limit} items reached ({no_rsm})"
        if n == want:
            return f"{no_rsm}, as many as requested: may be capped by the request"
        if self._max_items is not None and n >= self._max_items:
            return f"{no_rsm}, may be capped by max_items ({self._max_items})"
        return None

    def _finish(self, item_count: int, page_count: int, reason: str | None) -> None:
        if self._refused:
            refused = f"{len(self._refused)} items left out ({self._refused[0]})"
            reason = f"{reason}; {refused}" if reason else refused
        self._outcome = FetchOutcome(
            complete=reason is None, reason=reason, item_count=item_count, page_count=page_count
        )


def fetch_all(
    client: PubsubClient,
    service: str,
    node: str,
    *,
    page_size: int = 100,
    limit: int | None = None,
    max_items: int | None = None,
    timeout: float | None = None,
    on_reply: OnResult | None = None,
) -> NodeFetch:
    """Every item of ``service``/``node``, page by page (see the module docstring for the rule
    deciding :attr:`NodeFetch.outcome`).

    ``limit`` stops after that many items; ``max_items`` is the node's configured cap when the
    caller knows it; ``timeout`` applies to each request (default: the client's). ``on_reply``
    is called in slixmpp's receive path as each page's reply arrives (see ``OnResult``): once
    per page, before the page is yielded, and possibly for a reply the pager then refuses.
    """
    return NodeFetch(
        client,
        service,
        node,
        page_size=page_size,
        limit=limit,
        max_items=max_items,
        timeout=timeout,
        on_reply=on_reply,
    )


def _page(index: int, items: list[Item], reply: ItemsReply) -> Page:
    rsm = reply.rsm
    return Page(
        index=index,
        items=items,
        paged=rsm is not None,
        rsm_first=rsm.first if rsm else None,
        rsm_last=rsm.last if rsm else None,
        rsm_count=rsm.count if rsm else None,
    )
