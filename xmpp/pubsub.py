"""A typed XEP-0060 facade over one slixmpp session: our errors and our Items, never stanzas.

Requests are built as plain ElementTree (so exactly what is sent is visible here, e.g.
``notify='true'`` on a retract, which slixmpp only sends when asked) and replies are read from
their XML. Opening the session is :mod:`pubsub_cache.xmpp.client`'s job.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any, Literal

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from pubsub_cache.events.types import Item

from .disco import (
    Identity,
    ItemIdsPage,
    info_query,
    items_query,
    reply_identities,
    reply_item_ids,
)
from .errors import XmppNotConnected, XmppProtocolError, XmppRequestError, XmppTimeout
from .stanzas import (
    NS_DATA,
    NS_OWNER,
    NS_PUBSUB,
    NS_RSM,
    ConfigValue,
    ItemsReply,
    RsmInfo,
    SubscriptionState,
    config_form,
    form_fields,
    pubsub_condition,
    pubsub_request,
    reply_items,
    reply_rsm,
)

log = logging.getLogger(__name__)

__all__ = ["ItemsReply", "PubsubClient", "RsmInfo", "SubscriptionState"]

_STATES: dict[str, SubscriptionState] = {
    "none": "none",
    "pending": "pending",
    "subscribed": "subscribed",
    "unconfigured": "unconfigured",
}


OnResult = Callable[[], None]
"""Called synchronously, inside slixmpp's receive path, the moment a successful reply arrives.

Notification handlers run in that same path, in arrival order, while the coroutine awaiting the
reply resumes only later: a caller that must order what it does with the reply against the
notifications around it (the ingest's writer) reserves its place here.
"""


class PubsubClient:
    """Typed XEP-0060 requests over one slixmpp session.

    Every request method takes ``timeout`` (seconds; default: the client's) and raises
    :class:`XmppRequestError` when the server answers with an error, :class:`XmppTimeout`,
    :class:`XmppNotConnected`, or :class:`XmppProtocolError` for an unusable answer. Reads take
    ``on_result`` (see :data:`OnResult`).
    """

    def __init__(self, xmpp: slixmpp.ClientXMPP, *, timeout: float = 10.0) -> None:
        self.xmpp = xmpp
        self.timeout = timeout

    @property
    def jid(self) -> str:
        """The bare JID of the session: the account, and the service of its PEP nodes."""
        return str(self.xmpp.boundjid.bare)

    async def publish(
        self,
        service: str,
        node: str,
        item_id: str | None,
        payload: ET.Element | str | None,
        *,
        timeout: float | None = None,
    ) -> str:
        """Publish (or overwrite) one item; returns its id (the server's when none is given).

        ``payload`` as text must be one well-formed element (``ET.ParseError`` otherwise).
        """
        element = ET.fromstring(payload) if isinstance(payload, str) else payload
        item = ET.Element(f"{{{NS_PUBSUB}}}item", {"id": item_id} if item_id else {})
        if element is not None:
            item.append(element)
        request = pubsub_request(NS_PUBSUB, "publish", node, children=[item])
        reply = await self._send(
            "publish", service, node, "set", request, timeout=timeout, item_id=item_id
        )
        path = f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish/{{{NS_PUBSUB}}}item"
        published = reply.find(path)
        assigned = (published.get("id") if published is not None else None) or item_id
        if not assigned:
            raise XmppProtocolError("publish", service=service, node=node, reason="no item id")
        return assigned

    async def publish_pep(
        self,
        node: str,
        item_id: str | None,
        payload: ET.Element | str,
        *,
        timeout: float | None = None,
    ) -> str:
        """Publish to the account's own PEP node (the server creates it on first publish)."""
        return await self.publish(self.jid, node, item_id, payload, timeout=timeout)

    async def retract(
        self,
        service: str,
        node: str,
        item_id: str,
        *,
        notify: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Delete one item; ``notify`` asks the service to tell the subscribers."""
        item = ET.Element(f"{{{NS_PUBSUB}}}item", {"id": item_id})
        attrs = {"notify": "true"} if notify else {}
        request = pubsub_request(NS_PUBSUB, "retract", node, attrs=attrs, children=[item])
        await self._send("retract", service, node, "set", request, timeout=timeout, item_id=item_id)

    async def purge(self, service: str, node: str, *, timeout: float | None = None) -> None:
        """Remove every item of the node (owner)."""
        request = pubsub_request(NS_OWNER, "purge", node)
        await self._send("purge", service, node, "set", request, timeout=timeout)

    async def delete_node(
        self,
        service: str,
        node: str,
        *,
        redirect: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Delete the node (owner), optionally pointing subscribers at ``redirect`` (a URI)."""
        children = [ET.Element(f"{{{NS_OWNER}}}redirect", {"uri": redirect})] if redirect else []
        request = pubsub_request(NS_OWNER, "delete", node, children=children)
        await self._send("delete node", service, node, "set", request, timeout=timeout)

    async def create_node(
        self,
        service: str,
        node: str,
        config: Mapping[str, ConfigValue] | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        """Create a node, configured by ``config`` (``max_items`` means ``pubsub#max_items``);
        returns its name, which a server may choose differently."""
        siblings = []
        if config is not None:
            configure = ET.Element(f"{{{NS_PUBSUB}}}configure")
            configure.append(config_form(config))
            siblings.append(configure)
        request = pubsub_request(NS_PUBSUB, "create", node, siblings=siblings)
        reply = await self._send("create node", service, node, "set", request, timeout=timeout)
        created = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}create")
        return (created.get("node") if created is not None else None) or node

    async def configure_node(
        self,
        service: str,
        node: str,
        config: Mapping[str, ConfigValue],
        *,
        timeout: float | None = None,
    ) -> None:
        """Change some of the node's configuration fields (owner)."""
        request = pubsub_request(NS_OWNER, "configure", node, children=[config_form(config)])
        await self._send("configure node", service, node, "set", request, timeout=timeout)

    async def get_node_config(
        self, service: str, node: str, *, timeout: float | None = None
    ) -> dict[str, list[str]]:
        """The node's configuration form as ``{var: [values]}`` (owner)."""
        request = pubsub_request(NS_OWNER, "configure", node)
        reply = await self._send(
            "get node configuration", service, node, "get", request, timeout=timeout
        )
        form = reply.find(f".//{{{NS_DATA}}}x")
        return form_fields(form) if form is not None else {}

    async def subscribe(
        self, service: str, node: str, *, timeout: float | None = None
    ) -> SubscriptionState:
        """Subscribe the account's bare JID; returns the state the service granted."""
        request = pubsub_request(NS_PUBSUB, "subscribe", node, attrs={"jid": self.jid})
        reply = await self._send("subscribe", service, node, "set", request, timeout=timeout)
        granted = reply.find(f".//{{{NS_PUBSUB}}}subscription")
        raw = (granted.get("subscription") if granted is not None else None) or "subscribed"
        state = _STATES.get(raw)
        if state is None:
            reason = f"unknown subscription state {raw!r}"
            raise XmppProtocolError("subscribe", service=service, node=node, reason=reason)
        return state

    async def get_item(
        self,
        service: str,
        node: str,
        item_id: str,
        *,
        timeout: float | None = None,
        on_result: OnResult | None = None,
    ) -> Item | None:
        """One item by id; ``None`` when the node exists but the item does not."""
        wanted = ET.Element(f"{{{NS_PUBSUB}}}item", {"id": item_id})
        request = pubsub_request(NS_PUBSUB, "items", node, children=[wanted])
        reply = await self._send(
            "get item",
            service,
            node,
            "get",
            request,
            timeout=timeout,
            item_id=item_id,
            on_result=on_result,
        )
        items = reply_items(reply, "get item", service, node)
        return next((item for item in items if item.id == item_id), None)

    async def get_items_by_id(
        self, service: str, node: str, item_ids: list[str], *, timeout: float | None = None
    ) -> list[Item]:
        """The items of ``item_ids`` the node still holds (both servers leave out the others)."""
        wanted = [ET.Element(f"{{{NS_PUBSUB}}}item", {"id": item_id}) for item_id in item_ids]
        request = pubsub_request(NS_PUBSUB, "items", node, children=wanted)
        reply = await self._send("get items by id", service, node, "get", request, timeout=timeout)
        return reply_items(reply, "get items by id", service, node)

    async def get_items(
        self,
        service: str,
        node: str,
        *,
        max: int | None = None,
        after: str | None = None,
        max_items: int | None = None,
        timeout: float | None = None,
        on_result: OnResult | None = None,
    ) -> ItemsReply:
        """One ``<items>`` request, answered as is: RSM ``<max>``/``<after>`` when given, and the
        XEP-0060 ``max_items`` attribute (the newest N) when given."""
        attrs = {"max_items": str(max_items)} if max_items is not None else {}
        siblings = []
        if max is not None or after is not None:
            rsm = ET.Element(f"{{{NS_RSM}}}set")
            if max is not None:
                ET.SubElement(rsm, f"{{{NS_RSM}}}max").text = str(max)
            if after is not None:
                ET.SubElement(rsm, f"{{{NS_RSM}}}after").text = after
            siblings.append(rsm)
        request = pubsub_request(NS_PUBSUB, "items", node, attrs=attrs, siblings=siblings)
        reply = await self._send(
            "get items", service, node, "get", request, timeout=timeout, on_result=on_result
        )
        refused: list[str] = []
        items = reply_items(reply, "get items", service, node, refused=refused)
        for reason in refused:
            log.warning("item refused: %s", reason, extra={"service": service, "node": node})
        return ItemsReply(items=items, rsm=reply_rsm(reply), refused=refused)

    async def item_ids(
        self,
        service: str,
        node: str,
        *,
        after: str | None = None,
        max: int | None = None,
        timeout: float | None = None,
        on_result: OnResult | None = None,
    ) -> ItemIdsPage:
        """The node's item ids without payloads (disco#items on the node, XEP-0060 §5.5),
        paged with RSM when ``after``/``max`` are given and the service pages."""
        request = items_query(node, after=after, max=max)
        reply = await self._send(
            "list item ids", service, node, "get", request, timeout=timeout, on_result=on_result
        )
        return reply_item_ids(reply)

    async def identities(self, jid: str, *, timeout: float | None = None) -> list[Identity]:
        """The disco#info identities of ``jid`` (a server, a pubsub service, an account)."""
        reply = await self._send("discover", jid, None, "get", info_query(), timeout=timeout)
        return reply_identities(reply)

    async def ping(self, *, timeout: float | None = None) -> None:
        """XEP-0199 ping of the account's server: proves the session is alive."""
        request = ET.Element("{urn:xmpp:ping}ping")
        await self._send("ping", self.xmpp.boundjid.domain, None, "get", request, timeout=timeout)

    async def _send(
        self,
        operation: str,
        service: str,
        node: str | None,
        kind: Literal["get", "set"],
        request: ET.Element,
        *,
        timeout: float | None,
        item_id: str | None = None,
        on_result: OnResult | None = None,
    ) -> ET.Element:
        # Sends <iq type=kind to=service>request</iq>; returns the reply's XML.
        if self.xmpp.transport is None:
            raise XmppNotConnected(operation, jid=self.jid)
        seconds = self.timeout if timeout is None else timeout
        iq = self.xmpp.make_iq(ito=service, itype=kind)
        iq.append(request)
        options: dict[str, Any] = {"timeout": seconds}
        awaited = True
        if on_result is not None:
            # slixmpp calls it from the reply's handler for an error too, and after the caller
            # stopped waiting (cancelled): a writer slot reserved then would never be filled.
            def result(reply: slixmpp.Iq) -> None:
                if awaited and reply["type"] == "result":
                    on_result()

            options["callback"] = result
        try:
            reply = await iq.send(**options)  # type: ignore[no-untyped-call]
        except IqError as exc:
            raise XmppRequestError(
                operation,
                service=service,
                node=node,
                item_id=item_id,
                condition=str(exc.condition),
                text=str(exc.text or ""),
                error_type=str(exc.etype) if exc.etype else None,
                pubsub_condition=pubsub_condition(exc.iq.xml),
            ) from exc
        except IqTimeout as exc:
            raise XmppTimeout(operation, service=service, node=node, seconds=seconds) from exc
        finally:
            awaited = False
        xml: ET.Element = reply.xml
        return xml
