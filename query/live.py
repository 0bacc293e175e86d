"""Live reads through the client's own XMPP session, shaped exactly like cached answers.

A live read fetches the whole node with the pager (Prosody ignores RSM on items: its answer is
the whole node, up to ``max_items``), puts it in the requested order, restricts it to the item
ids and ``max_items`` asked for, then applies the RSM window itself (:mod:`.rsm`): a client
cannot tell a live page from a cached one but by ``from_cache``.

Orders: a service lists items in one order of its own (``creation`` on ejabberd,
``modification`` on Prosody: see ``projector/ranks.py``), which is all a live read can give:
asked for ``service``, or for the order the service is known to use, the answer is in that
order; asked for the other one, it is in the service's order all the same and ``Page.order``
says so. ``publication`` sorts by the date the payload's parser reads (else the ``<delay>``
stamp, else now), ties kept in the service's order, as the cache does.

XMPP errors never leave this module: :class:`LiveFetchTimeout`, :class:`LiveFetchError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from pubsub_cache.events.types import Item
from pubsub_cache.projector.parsers import Parser
from pubsub_cache.projector.payloads import parse_columns, payload_namespace
from pubsub_cache.projector.ranks import last_places

from .errors import LiveFetchError, LiveFetchTimeout
from .model import Order, Page, PageItem, RsmRequest
from .rsm import result_for, window_bounds

if TYPE_CHECKING:
    from pubsub_cache.xmpp.pubsub import PubsubClient

#: Items asked for per request; a server that pages sends at most this many at a time. Large,
#: because the pager takes an unpaged answer exactly this long as possibly capped.
PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class LiveNode:
    """Every item the service returned, in its order, and whether that was every item."""

    items: list[Item]
    complete: bool
    reason: str | None

    @property
    def namespace(self) -> str | None:
        """The namespace of the first payload, to pick the node's analyser."""
        return next(
            (payload_namespace(item.payload) for item in self.items if item.payload is not None),
            None,
        )


@contextmanager
def xmpp_errors(service: str, node: str, seconds: float) -> Iterator[None]:
    """Turn the XMPP edge's errors (and an overall timeout) into the query library's."""
    from pubsub_cache.xmpp.errors import XmppError, XmppRequestError, XmppTimeout

    try:
        with anyio.fail_after(seconds):
            yield
    except (TimeoutError, XmppTimeout) as exc:
        raise LiveFetchTimeout(service, node, seconds=seconds) from exc
    except XmppRequestError as exc:
        raise LiveFetchError(service, node, condition=exc.condition, detail=str(exc)) from exc
    except XmppError as exc:
        raise LiveFetchError(service, node, condition=None, detail=str(exc)) from exc


async def fetch_node(
    client: PubsubClient,
    service: str,
    node: str,
    *,
    timeout: float,
    max_items: int | None = None,
) -> LiveNode:
    """Every item of the node (``max_items``: the node's configured cap, when known)."""
    from pubsub_cache.xmpp.pager import fetch_all

    with xmpp_errors(service, node, timeout):
        fetch = fetch_all(
            client, service, node, page_size=PAGE_SIZE, max_items=max_items, timeout=timeout
        )
        items = [item async for page in fetch for item in page.items]
        outcome = fetch.outcome
    return LiveNode(unique(items), outcome.complete, outcome.reason)


def unique(items: list[Item]) -> list[Item]:
    """Each id once. A server may list an id twice: Prosody 0.12's memory store answers with
    both publications of a re-published id, the stale one where it was and the last one at the
    end (it orders by last publication). As the projector does, the last place and payload win."""
    return [items[index] for index in last_places([item.id for item in items])]


async def fetch_item(
    client: PubsubClient, service: str, node: str, item_id: str, *, timeout: float
) -> Item | None:
    """One item, or ``None`` when the node exists without it."""
    with xmpp_errors(service, node, timeout):
        return await client.get_item(service, node, item_id, timeout=timeout)


def live_item(item: Item, parser: Parser | None, now: float) -> tuple[PageItem, float]:
    """The item as a page item, parsed like the projector would, and its publication time."""
    columns = parse_columns(item.payload, parser)
    published = columns.published or item.delay
    stamp = published.timestamp() if published is not None else now
    page_item = PageItem(
        item.id, item.publisher, item.payload, columns.parsed, stamp, None, columns.parse_error
    )
    return page_item, stamp


def live_page(
    live: LiveNode,
    parser: Parser | None,
    *,
    service: str,
    node: str,
    order: Order,
    rsm: RsmRequest | None,
    item_ids: Sequence[str] | None,
    max_items: int | None,
    sync_requested: bool,
    service_order: str | None = None,
) -> Page:
    """The page a cached read of the same request would give, from a live answer.

    Only the items of the page are parsed, except in publication order, which needs every date.
    """
    now = time.time()
    wanted = None if item_ids is None else set(item_ids)
    chosen = [item for item in live.items if wanted is None or item.id in wanted]
    converted: dict[int, tuple[PageItem, float]] = {}

    def convert(index: int) -> tuple[PageItem, float]:
        if index not in converted:
            converted[index] = live_item(chosen[index], parser, now)
        return converted[index]

    ordered = list(range(len(chosen)))
    if order == "publication":
        ordered.sort(key=lambda index: convert(index)[1])  # stable: ties keep the service's order
    exact = live.complete or (wanted is not None and len(chosen) == len(wanted))
    if max_items is not None:
        exact = exact or len(ordered) >= max_items
        ordered = ordered[-max_items:] if max_items else []
    ids = [chosen[index].id for index in ordered]
    start, stop = window_bounds(ids, rsm, service=service, node=node)
    items = [convert(index)[0] for index in ordered[start:stop]]
    rsm_result = result_for(items, start, len(ids)) if exact else result_for(items, None, None)
    named = "publication" if order == "publication" else (service_order or "service")
    return Page(
        items,
        rsm_result,
        complete=exact,
        from_cache=False,
        sync_requested=sync_requested,
        order=named,
    )
