"""The pager: against Prosody (which does not page) and against a fake service that pages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout

from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.errors import XmppProtocolError, XmppRequestError, XmppTimeout
from pubsub_cache.xmpp.pager import FetchNotFinished, FetchOutcome, NodeFetch, Page, fetch_all

PUBSUB = "http://jabber.org/protocol/pubsub"
RSM = "http://jabber.org/protocol/rsm"

pytestmark = pytest.mark.anyio


async def collect(fetch: NodeFetch) -> tuple[list[Page], FetchOutcome]:
    pages = [page async for page in fetch]
    return pages, fetch.outcome


def ids(pages: list[Page]) -> list[str]:
    return [item.id for page in pages for item in page.items]


# -- against Prosody 0.12: one reply without <set/>, the whole node ----------------------------


async def fill(client: PubsubClient, service: str, node: str, count: int, **config: Any) -> None:
    await client.create_node(service, node, {"max_items": 256, **config})
    for n in range(count):
        await client.publish(service, node, f"item-{n:03}", f"<p xmlns='urn:test'>{n}</p>")


@pytest.mark.xmpp
@pytest.mark.parametrize("count", [0, 1, 250])
async def test_prosody_node_comes_back_whole_in_one_page_and_complete(
    prosody: LocalProsody, publisher: PubsubClient, reader: PubsubClient, node_name: str, count: int
) -> None:
    await fill(publisher, prosody.pubsub_service, node_name, count)

    pages, outcome = await collect(fetch_all(reader, prosody.pubsub_service, node_name))

    assert [(page.index, page.paged) for page in pages] == [(0, False)]
    assert ids(pages) == [f"item-{n:03}" for n in range(count)]  # oldest first, as Prosody sends
    assert outcome == FetchOutcome(complete=True, reason=None, item_count=count, page_count=1)
    if count:
        assert pages[0].items[0].payload == '<p xmlns="urn:test">0</p>'
        assert pages[0].items[0].publisher == "publisher@localhost"


@pytest.mark.xmpp
async def test_prosody_ignores_page_size_so_a_smaller_page_size_still_gets_everything(
    prosody: LocalProsody, publisher: PubsubClient, node_name: str
) -> None:
    await fill(publisher, prosody.pubsub_service, node_name, 30)

    pages, outcome = await collect(
        fetch_all(publisher, prosody.pubsub_service, node_name, page_size=7)
    )

    assert [len(page.items) for page in pages] == [30]
    assert outcome.complete


@pytest.mark.xmpp
async def test_unpaged_reply_as_large_as_the_request_is_partial(
    prosody: LocalProsody, publisher: PubsubClient, node_name: str
) -> None:
    await fill(publisher, prosody.pubsub_service, node_name, 20)

    _, outcome = await collect(
        fetch_all(publisher, prosody.pubsub_service, node_name, page_size=20)
    )

    assert not outcome.complete
    assert outcome.reason == (
        "server does not page (no RSM); 20 items returned, as many as requested: "
        "may be capped by the request"
    )


@pytest.mark.xmpp
async def test_unpaged_reply_reaching_the_nodes_max_items_is_partial(
    prosody: LocalProsody, publisher: PubsubClient, node_name: str
) -> None:
    # Prosody keeps the newest max_items and evicts the rest without a word.
    await fill(publisher, prosody.pubsub_service, node_name, 7, max_items=5)

    pages, outcome = await collect(
        fetch_all(publisher, prosody.pubsub_service, node_name, max_items=5)
    )

    assert ids(pages) == [f"item-{n:03}" for n in range(2, 7)]
    assert outcome == FetchOutcome(
        complete=False,
        reason="server does not page (no RSM); 5 items returned, may be capped by max_items (5)",
        item_count=5,
        page_count=1,
    )


@pytest.mark.xmpp
async def test_limit_stops_early_and_is_partial(
    prosody: LocalProsody, publisher: PubsubClient, node_name: str
) -> None:
    await fill(publisher, prosody.pubsub_service, node_name, 12)

    pages, outcome = await collect(
        fetch_all(publisher, prosody.pubsub_service, node_name, limit=10, page_size=100)
    )

    assert ids(pages) == [f"item-{n:03}" for n in range(10)]
    assert not outcome.complete
    assert outcome.reason is not None
    assert outcome.reason.startswith("limit of 10 items reached")


@pytest.mark.xmpp
async def test_missing_node_raises_item_not_found(
    prosody: LocalProsody, reader: PubsubClient
) -> None:
    fetch = fetch_all(reader, prosody.pubsub_service, "no-such-node")

    with pytest.raises(XmppRequestError) as raised:
        await collect(fetch)

    assert raised.value.condition == "item-not-found"
    assert raised.value.node == "no-such-node"
    assert "no-such-node" in str(raised.value)
    with pytest.raises(FetchNotFinished):
        _ = fetch.outcome


# -- against a fake service that pages with XEP-0059 (at the IQ boundary) -------------------


@dataclass
class PagingService:
    """Answers ``<items>`` requests like a server that pages with opaque cursors."""

    item_ids: list[str]
    send_count: bool = True
    send_last: bool = True
    stop_paging_after: int | None = None
    stuck: bool = False
    fail_on_request: int | None = None
    time_out_on_request: int | None = None
    ignore_max: bool = False
    requests: list[ET.Element] = field(default_factory=list)

    def answer(self, pubsub: ET.Element) -> ET.Element:
        self.requests.append(pubsub)
        number = len(self.requests)
        if number == self.fail_on_request:
            raise IqError(error_iq("item-not-found"))  # type: ignore[no-untyped-call]
        if number == self.time_out_on_request:
            raise IqTimeout(Iq())  # type: ignore[no-untyped-call]
        node = pubsub.find(f"{{{PUBSUB}}}items")
        assert node is not None
        want = int(pubsub.findtext(f"{{{RSM}}}set/{{{RSM}}}max", default="0") or 0)
        after = pubsub.findtext(f"{{{RSM}}}set/{{{RSM}}}after")
        start = 0 if after is None else int(after.removeprefix("cursor-")) + 1
        if self.stuck and after is not None:
            start = int(after.removeprefix("cursor-")) + 1 - want
        size = len(self.item_ids) if self.ignore_max else want
        page = list(enumerate(self.item_ids))[start : start + size]
        items = "".join(f"<item id='{i}'><p xmlns='urn:t'>{n}</p></item>" for n, i in page)
        rsm = ""
        if self.stop_paging_after is None or number <= self.stop_paging_after:
            first = f"<first index='{start}'>cursor-{page[0][0]}</first>" if page else ""
            last = f"<last>cursor-{page[-1][0]}</last>" if page and self.send_last else ""
            count = f"<count>{len(self.item_ids)}</count>" if self.send_count else ""
            rsm = f"<set xmlns='{RSM}'>{first}{last}{count}</set>"
        return ET.fromstring(
            f"<iq xmlns='jabber:client' type='result'><pubsub xmlns='{PUBSUB}'>"
            f"<items node='{node.get('node')}'>{items}</items>{rsm}</pubsub></iq>"
        )


def error_iq(condition: str) -> Iq:
    """A slixmpp error reply, as IqError carries it."""
    error = f"<error type='cancel'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    xml = ET.fromstring(f"<iq xmlns='jabber:client' type='error'>{error}</error></iq>")
    return Iq(xml=xml)  # type: ignore[no-untyped-call]


class _FakeIq:
    def __init__(self, service: PagingService) -> None:
        self._service = service
        self._request: ET.Element | None = None

    def append(self, element: ET.Element) -> None:
        self._request = element

    async def send(
        self, timeout: float, callback: Callable[[_FakeIq], None] | None = None
    ) -> _FakeIq:
        assert self._request is not None
        self.xml = self._service.answer(self._request)
        if callback is not None:  # as slixmpp does: on the reply, before the caller resumes
            callback(self)
        return self

    def __getitem__(self, key: str) -> str:
        # The callback checks the reply's type, as slixmpp's Iq gives it; this service only
        # answers results.
        assert key == "type"
        return "result"


class _FakeJid:
    bare = "reader@example.org"


class _FakeXmpp:
    transport = object()
    boundjid = _FakeJid()

    def __init__(self, service: PagingService) -> None:
        self._service = service

    def make_iq(self, ito: str, itype: str) -> _FakeIq:
        return _FakeIq(self._service)


def paging_client(service: PagingService) -> PubsubClient:
    return PubsubClient(cast(Any, _FakeXmpp(service)))


def sent_cursors(service: PagingService) -> list[tuple[str | None, str | None]]:
    return [
        (r.findtext(f"{{{RSM}}}set/{{{RSM}}}max"), r.findtext(f"{{{RSM}}}set/{{{RSM}}}after"))
        for r in service.requests
    ]


ELEVEN = [f"id-{n}" for n in range(11)]


async def test_paging_server_is_followed_with_after_until_count_is_reached() -> None:
    service = PagingService(ELEVEN)

    pages, outcome = await collect(
        fetch_all(paging_client(service), "ps.example.org", "n", page_size=4)
    )

    assert ids(pages) == ELEVEN
    assert [(p.index, len(p.items), p.paged) for p in pages] == [
        (0, 4, True),
        (1, 4, True),
        (2, 3, True),
    ]
    assert (pages[1].rsm_first, pages[1].rsm_last, pages[1].rsm_count) == (
        "cursor-4",
        "cursor-7",
        11,
    )
    assert sent_cursors(service) == [("4", None), ("4", "cursor-3"), ("4", "cursor-7")]
    assert outcome == FetchOutcome(complete=True, reason=None, item_count=11, page_count=3)
    request = service.requests[0].find(f"{{{PUBSUB}}}items")
    assert request is not None
    assert request.get("max_items") is None  # would cap servers that do not page


async def test_on_reply_is_called_as_each_page_arrives_before_it_is_yielded() -> None:
    arrivals: list[str] = []
    fetch = fetch_all(
        paging_client(PagingService(ELEVEN)),
        "ps.example.org",
        "n",
        page_size=4,
        on_reply=lambda: arrivals.append("reply"),
    )

    async for page in fetch:
        arrivals.append(f"page {page.index}")

    assert arrivals == ["reply", "page 0", "reply", "page 1", "reply", "page 2"]


async def test_paging_server_without_count_is_followed_until_an_empty_page() -> None:
    service = PagingService(ELEVEN, send_count=False)

    pages, outcome = await collect(fetch_all(paging_client(service), "ps", "n", page_size=4))

    assert [len(p.items) for p in pages] == [4, 4, 3, 0]
    assert outcome == FetchOutcome(complete=True, reason=None, item_count=11, page_count=4)


async def test_limit_on_a_paging_server_is_partial_unless_the_count_is_reached() -> None:
    short = PagingService(ELEVEN)
    exact = PagingService(ELEVEN)

    pages, outcome = await collect(fetch_all(paging_client(short), "ps", "n", page_size=4, limit=6))
    _, exact_outcome = await collect(
        fetch_all(paging_client(exact), "ps", "n", page_size=4, limit=11)
    )

    assert [len(p.items) for p in pages] == [4, 2]
    assert sent_cursors(short) == [("4", None), ("2", "cursor-3")]
    assert outcome == FetchOutcome(
        complete=False, reason="limit of 6 items reached", item_count=6, page_count=2
    )
    assert exact_outcome.complete


async def test_paging_server_sending_more_than_asked_is_cut_at_the_limit() -> None:
    service = PagingService(ELEVEN, ignore_max=True)

    pages, outcome = await collect(fetch_all(paging_client(service), "ps", "n", limit=5))

    assert ids(pages) == ELEVEN[:5]
    assert not outcome.complete


async def test_page_with_items_but_no_last_cursor_is_partial() -> None:
    service = PagingService(ELEVEN, send_last=False)

    pages, outcome = await collect(fetch_all(paging_client(service), "ps", "n", page_size=4))

    assert len(pages) == 1
    assert outcome.reason == "page 0 has items but no RSM <last>"


async def test_server_that_stops_paging_midway_is_partial() -> None:
    service = PagingService(ELEVEN, stop_paging_after=1)

    pages, outcome = await collect(fetch_all(paging_client(service), "ps", "n", page_size=4))

    assert [(p.paged, len(p.items)) for p in pages] == [(True, 4), (False, 4)]
    assert outcome == FetchOutcome(
        complete=False,
        reason="server stopped paging (no RSM) after page 1",
        item_count=8,
        page_count=2,
    )


async def test_cursor_that_does_not_advance_raises() -> None:
    service = PagingService(ELEVEN, stuck=True)

    with pytest.raises(XmppProtocolError, match="did not advance"):
        await collect(fetch_all(paging_client(service), "ps", "n", page_size=4))


async def test_error_on_a_later_page_is_raised_not_swallowed() -> None:
    service = PagingService(ELEVEN, fail_on_request=2)
    fetch = fetch_all(paging_client(service), "ps", "n", page_size=4)
    seen: list[Page] = []

    async def consume() -> None:
        async for page in fetch:
            seen.append(page)

    with pytest.raises(XmppRequestError) as raised:
        await consume()

    assert len(seen) == 1
    assert raised.value.condition == "item-not-found"
    with pytest.raises(FetchNotFinished):
        _ = fetch.outcome


async def test_timeout_is_raised_as_xmpp_timeout() -> None:
    service = PagingService(ELEVEN, time_out_on_request=1)

    with pytest.raises(XmppTimeout, match=r"get items on node 'n' of ps: no answer within 3 s"):
        await collect(fetch_all(paging_client(service), "ps", "n", timeout=3))


def test_page_size_and_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fetch_all(paging_client(PagingService([])), "ps", "n", page_size=0)
