"""XEP-0030 service discovery as the cache uses it: a node's item ids without payloads
(XEP-0060 §5.5) for reconciliation, and a service's identities to learn how it orders items.

Pure ElementTree readers and builders, like :mod:`.stanzas`; the requests are sent by
:class:`~pubsub_cache.xmpp.pubsub.PubsubClient`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import msgspec

from pubsub_cache.events.types import ServiceOrder
from pubsub_cache.projector.ranks import last_places

from .stanzas import NS_RSM, RsmInfo

NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


class Identity(msgspec.Struct, frozen=True):
    """One ``<identity/>`` of a disco#info answer."""

    category: str
    type: str
    name: str | None = None


class ItemIdsPage(msgspec.Struct, frozen=True, kw_only=True):
    """One disco#items answer for a node: the ids it lists, in its order, and its ``<set/>``."""

    ids: list[str]
    rsm: RsmInfo | None


def items_query(node: str, *, after: str | None = None, max: int | None = None) -> ET.Element:
    """``<query xmlns=disco#items node=node/>``, with an RSM ``<set/>`` when paging."""
    query = ET.Element(f"{{{NS_DISCO_ITEMS}}}query", {"node": node})
    if after is not None or max is not None:
        rsm = ET.SubElement(query, f"{{{NS_RSM}}}set")
        if max is not None:
            ET.SubElement(rsm, f"{{{NS_RSM}}}max").text = str(max)
        if after is not None:
            ET.SubElement(rsm, f"{{{NS_RSM}}}after").text = after
    return query


def info_query(node: str | None = None) -> ET.Element:
    """``<query xmlns=disco#info [node=node]/>``."""
    return ET.Element(f"{{{NS_DISCO_INFO}}}query", {"node": node} if node else {})


def reply_item_ids(reply: ET.Element) -> ItemIdsPage:
    """The item ids of a disco#items reply ``<iq>`` on a node: each ``<item/>``'s ``name``
    (XEP-0060 §5.5: the item id; ``jid`` is the service). Entries without one are skipped."""
    query = reply.find(f"{{{NS_DISCO_ITEMS}}}query")
    if query is None:
        return ItemIdsPage(ids=[], rsm=None)
    ids = [
        name
        for element in query.iterfind(f"{{{NS_DISCO_ITEMS}}}item")
        if (name := element.get("name"))
    ]
    found = query.find(f"{{{NS_RSM}}}set")
    rsm = None
    if found is not None:
        count = (found.findtext(f"{{{NS_RSM}}}count") or "").strip()
        rsm = RsmInfo(
            first=found.findtext(f"{{{NS_RSM}}}first") or None,
            last=found.findtext(f"{{{NS_RSM}}}last") or None,
            count=int(count) if count.isdigit() else None,
        )
    return ItemIdsPage(ids=ids, rsm=rsm)


def reply_identities(reply: ET.Element) -> list[Identity]:
    """The identities of a disco#info reply ``<iq>``."""
    query = reply.find(f"{{{NS_DISCO_INFO}}}query")
    if query is None:
        return []
    return [
        Identity(element.get("category", ""), element.get("type", ""), element.get("name"))
        for element in query.iterfind(f"{{{NS_DISCO_INFO}}}identity")
    ]


#: Server software whose item order is known (DESIGN.md, "What servers do"), by a word its
#: disco identities carry in their names.
KNOWN_ORDERS: dict[str, ServiceOrder] = {"prosody": "modification", "ejabberd": "creation"}


def order_from_listing(
    listed: list[str], by_creation: list[str], by_modification: list[str]
) -> ServiceOrder | None:
    """Which order a service's listing follows, judged on the items the cache already knows
    in both orders: ``None`` unless exactly one of the two matches (they differ only once an
    item was re-published while the cache watched)."""
    known = set(by_creation) & set(listed)
    if len(known) < 2:
        return None
    shown = [listed[index] for index in last_places(listed) if listed[index] in known]
    creation = [item_id for item_id in by_creation if item_id in known]
    modification = [item_id for item_id in by_modification if item_id in known]
    if creation == modification:
        return None
    if shown == creation:
        return "creation"
    if shown == modification:
        return "modification"
    return None


def order_from_identities(identities: list[Identity]) -> tuple[str | None, ServiceOrder | None]:
    """(software, its item order) named by ``identities``; ``(None, None)`` when none is known."""
    for identity in identities:
        name = (identity.name or "").lower()
        for software, order in KNOWN_ORDERS.items():
            if software in name:
                return software, order
    return None, None
