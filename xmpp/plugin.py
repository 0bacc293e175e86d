"""The cache embedded in a slixmpp program: its own session is the ingest (a slixmpp plugin).

::

    xmpp = slixmpp.ClientXMPP(jid, password)
    xmpp.register_plugin(
        "pubsub_cache", pconfig={"database": URL}, module="pubsub_cache.xmpp.plugin"
    )
    ...
    reply = await xmpp.plugin["xep_0060"].get_items(service, node, max_items=20)  # from the cache
    async for change in xmpp.plugin["pubsub_cache"].query.watch(account, service, node):
        ...
    await xmpp.plugin["pubsub_cache"].close()

Once registered, the program's session does what the daemon's does (:mod:`.ingest`): its
notifications are appended to the log, the synced nodes are re-read after each (re)connection,
the sync requests recorded in the log are carried out through it, and the projector runs in
the same process. Where another process already ingests the account on the same database (its
``ingest_lease``), the plugin only reads, and takes over when that lease is released or expires.

Every ``<iq type='get'><pubsub><items/></pubsub></iq>`` the program sends (``get_items``,
``get_item``, the RSM iterator, a hand-built request) is answered from the cache when the cache
holds the answer: the reply is the Iq the server would send (items in the service's order,
``max_items``, and an XEP-0059 ``<set/>`` when the request paged), handed to slixmpp as if
received, so it works with the server unreachable. Other requests go to the server; a node to
sync read that way gets a sync request. The plugin's own requests (syncs, fetches) always go to
the server: they run under :data:`_OWN_REQUESTS`.

The ingest's per-session machinery is :class:`~.ingest.Ingest`'s, driven through the program's
session (its ``serve_session`` and ``handle_message``, which the daemon calls for the sessions it
opens).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import xml.etree.ElementTree as ET
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from slixmpp import ClientXMPP
from slixmpp.plugins.base import BasePlugin
from slixmpp.plugins.xep_0059 import Set as RsmSet
from slixmpp.plugins.xep_0060.stanza import Pubsub
from slixmpp.stanza import Iq
from slixmpp.xmlstream import StanzaBase, register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.payloads import payload_namespace
from pubsub_cache.query.api import Query
from pubsub_cache.query.cache import CacheAnswer
from pubsub_cache.query.errors import QueryError, RsmItemNotFound
from pubsub_cache.query.model import Page, RsmRequest

from .client import DEFAULT_PLUGINS, add_notification_handler
from .ingest import Ingest, IngestOptions, XmppAccount
from .lease import IngestLease
from .pubsub import PubsubClient
from .stanzas import NS_PUBSUB, NS_RSM
from .writer import RETRYABLE

log = logging.getLogger(__name__)

#: True in the plugin's own tasks: their requests go to the server, never to the cache.
_OWN_REQUESTS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pubsub_cache_own_requests", default=False
)

#: The ingest's tuning in a client program: sync requests are looked for more often.
EMBEDDED = IngestOptions(request_poll=0.25)

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class pubsub_cache(BasePlugin):  # slixmpp finds a plugin by its name
    """The cache embedded in this session (see the module docstring). Configuration:
    ``database`` (URL or engine), ``projector`` (run one here, default true), ``options``
    (:class:`IngestOptions`), ``registry`` (analysers; default: the installed ones)."""

    name = "pubsub_cache"
    description = "pubsub-cache: this session is the cache's ingest; reads answered from it"
    dependencies = set(DEFAULT_PLUGINS)
    default_config = {
        "database": None,
        "projector": True,
        "options": None,
        "registry": None,
    }

    def plugin_init(self) -> None:
        from pubsub_cache.projector.analysers import default_registry
        from pubsub_cache.xmpp.directory import ReadModelDirectory

        if self.config.get("database") is None:
            raise ValueError("the pubsub_cache plugin needs pconfig={'database': URL}")
        xmpp = self.xmpp
        if not isinstance(xmpp, ClientXMPP):
            raise TypeError("the pubsub_cache plugin caches a client's view (a ClientXMPP)")
        self.client = xmpp
        register_stanza_plugin(Pubsub, RsmSet)  # slixmpp 1.17 forgets it; idempotent
        self.account = str(xmpp.boundjid.bare)
        self.engine = create_engine(self.config["database"])
        self.registry = self.config.get("registry") or default_registry()
        self.log = EventLog(self.engine)
        self.directory = ReadModelDirectory(self.engine, self.registry)
        self.query = Query(self.engine, client=xmpp, registry=self.registry, event_log=self.log)
        """Reads of the cache for this session's account (live through it when not cached)."""
        self.ingest = Ingest(
            XmppAccount(jid=self.account, password=""),  # the session is the program's
            self.log,
            self.directory,
            options=self.config.get("options") or EMBEDDED,
        )
        self.lease = IngestLease(self.engine, self.account)
        self.ingesting = False
        """Whether this session ingests the account (else another process does)."""
        self.answered = 0
        """Item requests answered from the cache (an error the cache knows of included)."""
        self._up = asyncio.Event()
        self._lost: anyio.Event | None = None
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        for namespace in self.directory.pep_notify():
            xmpp.plugin["xep_0030"].add_feature(f"{namespace}+notify")
        self._remove_handler = add_notification_handler(xmpp, self._on_notification)
        xmpp.add_event_handler("session_start", self._session_start)
        xmpp.add_event_handler("disconnected", self._disconnected)
        self._send = xmpp.send
        # Shadows the method on this instance only: Iq.send() calls stream.send(), and so does
        # everything else the program sends. Put back by close().
        xmpp.send = self._intercept  # type: ignore[method-assign]
        if xmpp.sessionstarted:
            self._session_start(None)
        self._runner = xmpp.loop.create_task(self._run())

    def plugin_end(self) -> None:
        self._uninstall()

    async def ready(self) -> None:
        """Return once the schema is there, the projector caught up and the lease decided
        (raises what stopped the plugin, if anything did)."""
        await asyncio.wait(
            [asyncio.ensure_future(self._ready.wait()), self._runner],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Stop the ingest (appending what it queued) and the projector, release the lease,
        give the session back to the program as it was."""
        self._uninstall()
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.query.close()
        self.log.close()
        self.engine.dispose()

    def _uninstall(self) -> None:
        xmpp = self.client
        if xmpp.send == self._intercept:
            xmpp.send = self._send  # type: ignore[method-assign]
            self._remove_handler()
            xmpp.del_event_handler("session_start", self._session_start)
            xmpp.del_event_handler("disconnected", self._disconnected)

    # -- the ingest and the projector ------------------------------------------------------

    async def _run(self) -> None:
        from pubsub_cache.migrations.api import ensure_schema
        from pubsub_cache.projector.runner import Projector

        _OWN_REQUESTS.set(True)  # inherited by every task started from here
        try:
            await anyio.to_thread.run_sync(ensure_schema, self.engine)
            async with anyio.create_task_group() as group:
                if self.config.get("projector", True):
                    projector = Projector(self.engine, registry=self.registry, log=self.log)
                    await group.start(functools.partial(projector.run, idle_timeout=0.25))
                await group.start(self.ingest.writer.run)
                await group.start(self._follow_lease, group)
                self._ready.set()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("the embedded pubsub cache stopped")
                self._failure = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.ingest.writer.close()
                if self.ingesting:
                    with anyio.move_on_after(5):
                        await anyio.to_thread.run_sync(self.lease.release)

    async def _follow_lease(
        self,
        group: anyio.abc.TaskGroup,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        # Ingest while the lease is ours; only read while another process holds it.
        ttl = self.ingest.options.lease_ttl
        holder, started = None, False
        while True:
            try:
                holder = await anyio.to_thread.run_sync(functools.partial(self.lease.take, ttl=ttl))
            except RETRYABLE as exc:  # the writer rides the outage out; the lease waits
                log.warning("ingest lease: %s", exc, extra={"account": self.account})
            else:
                if holder is None and not self.ingesting:
                    self.ingesting = True
                    group.start_soon(self._sessions)
                elif holder is not None and (self.ingesting or not started):
                    log.warning(
                        "the account is ingested by another process: reading only",
                        extra={"account": self.account, "owner": holder.owner},
                    )
                    self.ingesting = False
                    if self._lost is not None:
                        self._lost.set()
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(ttl / 3)

    async def _sessions(self) -> None:
        while self.ingesting:
            await self._up.wait()
            lost = self._lost = anyio.Event()
            if not self._up.is_set() or not self.ingesting:
                continue
            client = PubsubClient(self.client, timeout=self.ingest.options.request_timeout)
            await self.ingest.serve_session(client, lost, anyio.TASK_STATUS_IGNORED)

    def _session_start(self, _event: object) -> None:
        self._up.set()
        if self.directory.pep_notify():  # +notify in the caps, presence sent again
            self._spawn(self.xmpp.plugin["xep_0115"].update_caps(broadcast=True))

    def _disconnected(self, _event: object) -> None:
        self._up.clear()
        if self._lost is not None:
            self._lost.set()

    def _on_notification(self, message: ET.Element) -> None:
        if self.ingesting:
            self.ingest.handle_message(message)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- item requests answered from the cache --------------------------------------------

    def _intercept(self, data: Any, use_filters: bool = True) -> None:
        request = None if _OWN_REQUESTS.get() else items_request(data, self.account)
        if request is None:
            self._send(data, use_filters)
            return
        self._spawn(self._answer(data, request, use_filters))

    async def _answer(self, iq: Iq, request: ItemsRequest, use_filters: bool) -> None:
        try:
            answer = await self.query.cached_items(
                self.account,
                request.service,
                request.node,
                item_ids=request.item_ids,
                max_items=request.max_items,
                rsm=request.rsm,
            )
        except RsmItemNotFound:
            self._reply(error_reply(iq, str(self.client.boundjid), "item-not-found"))
            return
        except (QueryError, *RETRYABLE) as exc:
            log.debug("the cache cannot answer: %s", exc, extra={"request": str(request)})
            answer = CacheAnswer(None, None, str(exc))
        try:
            page, to = answer.page, str(self.client.boundjid)
            reply = None if page is None else items_reply(iq, to, request, page)
        except ET.ParseError:  # a payload stored raw that no parser could read
            reply = None
        if reply is None:
            self._forward(iq, request, answer, use_filters)
            return
        self._reply(reply)

    def _reply(self, reply: ET.Element) -> None:
        self.answered += 1
        self.client.recv_stanza(self.client.Iq(xml=reply, recv=True))

    def _forward(
        self, iq: Iq, request: ItemsRequest, answer: CacheAnswer, use_filters: bool
    ) -> None:
        # The server answers; a node to sync read this way gets its sync (as Query's live reads).
        def seen(reply: StanzaBase) -> None:
            if reply["type"] != "result":
                return
            first = reply.xml.find(f".//{{{NS_PUBSUB}}}item/*")
            namespace = None if first is None else payload_namespace(ET.tostring(first, "unicode"))
            request_sync = self.query.request_sync
            args = (answer, self.account, request.service, request.node, namespace)
            self._spawn(request_sync(*args))

        self.xmpp.register_handler(
            Callback(f"pubsub-cache reply {iq['id']}", MatcherId(iq["id"]), seen, once=True)
        )
        self._send(iq, use_filters)


def embedded_cache(xmpp: ClientXMPP) -> pubsub_cache:
    """``xmpp.plugin["pubsub_cache"]``, typed (raises ``LookupError`` when not registered)."""
    plugin = xmpp.plugin.get("pubsub_cache", None)
    if not isinstance(plugin, pubsub_cache):
        raise LookupError("the pubsub_cache plugin is not registered on this session")
    return plugin


class ItemsRequest:
    """What an ``<items/>`` request asks for, in the query library's words."""

    __slots__ = ("item_ids", "max_items", "node", "rsm", "service")

    def __init__(
        self,
        service: str,
        node: str,
        item_ids: list[str] | None,
        max_items: int | None,
        rsm: RsmRequest | None,
    ) -> None:
        self.service, self.node, self.item_ids = service, node, item_ids
        self.max_items, self.rsm = max_items, rsm

    def __repr__(self) -> str:
        return f"<items of node {self.node!r} of {self.service}>"


def items_request(stanza: Any, account: str) -> ItemsRequest | None:
    """The request of an ``<iq type='get'>`` for a node's items; ``None`` for anything else
    (or anything the cache would not read as the server does: those go to the server)."""
    if not isinstance(stanza, Iq) or stanza["type"] != "get":
        return None
    children = list(stanza.xml)
    if len(children) != 1 or children[0].tag != f"{{{NS_PUBSUB}}}pubsub":
        return None
    pubsub = children[0]
    items = pubsub.find(f"{{{NS_PUBSUB}}}items")
    extra = [c for c in pubsub if c.tag not in (f"{{{NS_PUBSUB}}}items", f"{{{NS_RSM}}}set")]
    node = items.get("node") if items is not None else None
    if items is None or extra or not node or items.get("subid"):
        return None
    try:
        cap = items.get("max_items")
        max_items = int(cap) if cap is not None else None
        rsm = rsm_request(pubsub.find(f"{{{NS_RSM}}}set"))
    except (ValueError, QueryError):
        return None
    ids = [item.get("id") or "" for item in items.findall(f"{{{NS_PUBSUB}}}item")]
    if "" in ids:
        return None
    service = str(stanza["to"].bare) or account
    return ItemsRequest(service, node, ids or None, max_items, rsm)


def rsm_request(element: ET.Element | None) -> RsmRequest | None:
    """An XEP-0059 ``<set/>`` of a request, as :class:`RsmRequest` (raises on bad values)."""
    if element is None:
        return None

    def text(name: str) -> str | None:
        child = element.find(f"{{{NS_RSM}}}{name}")
        return None if child is None else (child.text or "")

    size, index = text("max"), text("index")
    return RsmRequest(
        max=int(size) if size is not None else None,
        after=text("after"),
        before=text("before"),
        index=int(index) if index is not None else None,
    )


def items_reply(iq: Iq, to: str, request: ItemsRequest, page: Page) -> ET.Element:
    """The ``<iq type='result'/>`` a server answers ``iq`` (from ``to``) with: ``page``."""
    reply = _reply_to(iq, to, "result")
    pubsub = ET.SubElement(reply, f"{{{NS_PUBSUB}}}pubsub")
    items = ET.SubElement(pubsub, f"{{{NS_PUBSUB}}}items", {"node": request.node})
    for item in page.items:
        attributes = {"id": item.id}
        if item.publisher:
            attributes["publisher"] = item.publisher
        element = ET.SubElement(items, f"{{{NS_PUBSUB}}}item", attributes)
        if item.payload is not None:
            element.append(ET.fromstring(item.payload))
    if request.rsm is not None:  # XEP-0059: a paged request gets the set's description
        found = page.rsm
        rsm = ET.SubElement(pubsub, f"{{{NS_RSM}}}set")
        if found.first is not None:
            index = {"index": str(found.index)} if found.index is not None else {}
            ET.SubElement(rsm, f"{{{NS_RSM}}}first", index).text = found.first
            ET.SubElement(rsm, f"{{{NS_RSM}}}last").text = found.last
        if found.count is not None:
            ET.SubElement(rsm, f"{{{NS_RSM}}}count").text = str(found.count)
    return reply


def error_reply(iq: Iq, to: str, condition: str) -> ET.Element:
    """The ``<iq type='error'/>`` of ``condition`` (``cancel``) for ``iq`` (from ``to``)."""
    reply = _reply_to(iq, to, "error")
    error = ET.SubElement(reply, "{jabber:client}error", {"type": "cancel"})
    ET.SubElement(error, f"{{{NS_STANZAS}}}{condition}")
    return reply


def _reply_to(iq: Iq, to: str, kind: str) -> ET.Element:
    attributes = {"type": kind, "id": iq["id"], "to": to}
    if iq["to"]:
        attributes["from"] = str(iq["to"])
    return ET.Element("{jabber:client}iq", attributes)
