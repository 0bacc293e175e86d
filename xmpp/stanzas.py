"""Pure ElementTree readers and builders of the XEP-0060/XEP-0059 XML we exchange.

Shared by notifications (:mod:`.translate`) and requests (:mod:`.pubsub`); no slixmpp, no I/O.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec

from pubsub_cache.events.errors import InvalidEvent
from pubsub_cache.events.types import Item

from .errors import XmppProtocolError

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"

SubscriptionState = Literal["none", "pending", "subscribed", "unconfigured"]
ConfigValue = str | int | bool | Sequence[str]


class RsmInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The XEP-0059 ``<set/>`` of a reply: cursors of the page and the size of the result set."""

    first: str | None = None
    last: str | None = None
    count: int | None = None
    first_index: int | None = None


class ItemsReply(msgspec.Struct, frozen=True, kw_only=True):
    """One ``<items>`` answer: its items in the server's order, and its RSM ``<set/>``, if any."""

    items: list[Item]
    rsm: RsmInfo | None
    """``None`` when the server sent no ``<set/>``: then the reply is the whole answer."""
    refused: list[str] = msgspec.field(default_factory=list)
    """Why each item of the reply left out of :attr:`items` was refused: a value over the event
    limits (an id longer than 3071 characters) that could never be decoded once logged."""


def item_from_element(element: ET.Element, *, delay: datetime | None = None) -> Item:
    """An ``<item>`` (of a notification or of an ``<items>`` reply) as an :class:`Item`.

    Raises ``ValueError`` for an item without ``id`` or with more than one payload element.
    """
    item_id = element.get("id")
    if not item_id:
        raise ValueError("<item> without an id")
    payloads = [child for child in element if isinstance(child.tag, str)]
    if len(payloads) > 1:
        raise ValueError(f"item {item_id!r} holds {len(payloads)} payload elements, at most 1")
    return Item(
        id=item_id,
        publisher=element.get("publisher") or None,
        payload=payload_xml(payloads[0]) if payloads else None,
        delay=delay,
    )


def payload_xml(element: ET.Element) -> str:
    """``element`` (without its tail) as standalone XML text, e.g.
    ``<entry xmlns="http://www.w3.org/2005/Atom"><title>…</title></entry>``.

    Namespaces are declared as defaults where they change, as servers send them; a namespaced
    attribute gets an ``nsN`` prefix declared on its element. Neither ``ET.tostring`` (``ns0:``
    prefixes on every element) nor slixmpp's ``tostring`` (drops namespaced attributes) does.
    """
    out: list[str] = []
    _write(element, None, out)
    return "".join(out)


def _write(element: ET.Element, parent_namespace: str | None, out: list[str]) -> None:
    namespace, _, local = (
        element.tag[1:].rpartition("}") if element.tag[0] == "{" else ("", "", element.tag)
    )
    out.append(f"<{local}")
    if namespace != (parent_namespace or ""):
        out.append(f' xmlns="{_attr(namespace)}"')
    prefixes: dict[str, str] = {}
    for key, value in element.attrib.items():
        name = key
        if key[0] == "{":
            attr_namespace, _, attr_local = key[1:].rpartition("}")
            if attr_namespace == _NS_XML:
                name = f"xml:{attr_local}"
            else:
                prefix = prefixes.setdefault(attr_namespace, f"ns{len(prefixes)}")
                name = f"{prefix}:{attr_local}"
        out.append(f' {name}="{_attr(value)}"')
    out.extend(f' xmlns:{prefix}="{_attr(uri)}"' for uri, prefix in prefixes.items())
    if element.text is None and len(element) == 0:
        out.append("/>")
        return
    out.append(">")
    if element.text:
        out.append(_text(element.text))
    for child in element:
        if isinstance(child.tag, str):  # comments and processing instructions are dropped
            _write(child, namespace, out)
        if child.tail:
            out.append(_text(child.tail))
    out.append(f"</{local}>")


_NS_XML = "http://www.w3.org/XML/1998/namespace"


def _text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def message_delay(message: ET.Element) -> datetime | None:
    """The message's XEP-0203 ``<delay stamp>``; ``None`` when absent or unreadable."""
    delay = message.find(f"{{{NS_DELAY}}}delay")
    stamp = delay.get("stamp") if delay is not None else None
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None  # observed_at still dates the event; a bad stamp is not worth a rejection
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def form_fields(form: ET.Element) -> dict[str, list[str]]:
    """The fields of a ``jabber:x:data`` form: ``var`` to its values (fields without ``var``,
    such as ``fixed`` labels, are left out)."""
    fields: dict[str, list[str]] = {}
    for field in form.findall(f"{{{NS_DATA}}}field"):
        var = field.get("var")
        if var:
            values = [value.text or "" for value in field.findall(f"{{{NS_DATA}}}value")]
            fields[var] = values
    return fields


def pubsub_request(
    namespace: str,
    verb: str,
    node: str,
    *,
    attrs: Mapping[str, str] | None = None,
    children: Sequence[ET.Element] = (),
    siblings: Sequence[ET.Element] = (),
) -> ET.Element:
    """``<pubsub xmlns=namespace><verb node=node attrs>children</verb>siblings</pubsub>``."""
    pubsub = ET.Element(f"{{{namespace}}}pubsub")
    action = ET.SubElement(pubsub, f"{{{namespace}}}{verb}", {"node": node, **(attrs or {})})
    action.extend(children)
    pubsub.extend(siblings)
    return pubsub


def reply_items(
    reply: ET.Element,
    operation: str,
    service: str,
    node: str,
    *,
    refused: list[str] | None = None,
) -> list[Item]:
    """The items of an ``<items>`` reply ``<iq>``, in its order; :class:`XmppProtocolError`
    for an item without id or with several payloads.

    An item over the event limits (invariant 11) is left out and its reason appended to
    ``refused`` when given (a sync page goes on without it), else it is a protocol error too.
    """
    found = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    if found is None:
        return []
    items = []
    for element in found.iterfind(f"{{{NS_PUBSUB}}}item"):
        try:
            items.append(item_from_element(element))
        except InvalidEvent as exc:
            if refused is None:
                raise XmppProtocolError(
                    operation, service=service, node=node, reason=exc.reason
                ) from None
            refused.append(f"item refused: {exc.reason}")
        except ValueError as exc:
            raise XmppProtocolError(
                operation, service=service, node=node, reason=str(exc)
            ) from None
    return items


def reply_rsm(reply: ET.Element) -> RsmInfo | None:
    """The RSM ``<set/>`` of a reply ``<iq>``; ``None`` when it has none."""
    found = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_RSM}}}set")
    if found is None:
        return None
    first = found.find(f"{{{NS_RSM}}}first")
    count = (found.findtext(f"{{{NS_RSM}}}count") or "").strip()
    index = (first.get("index") if first is not None else None) or ""
    return RsmInfo(
        first=(first.text or None) if first is not None else None,
        last=found.findtext(f"{{{NS_RSM}}}last") or None,
        count=int(count) if count.isdigit() else None,
        first_index=int(index) if index.isdigit() else None,
    )


def pubsub_condition(error_iq: ET.Element) -> str | None:
    """The XEP-0060 application condition (``nodeid-required``, ...) of an error ``<iq>``."""
    for child in error_iq.iterfind("{jabber:client}error/*"):
        if child.tag.startswith(f"{{{NS_ERRORS}}}"):
            return child.tag.rpartition("}")[2]
    return None


def config_form(config: Mapping[str, ConfigValue]) -> ET.Element:
    """A ``pubsub#node_config`` submit form; bare keys get the ``pubsub#`` prefix, booleans
    become ``1``/``0``, sequences multiple values."""
    form = ET.Element(f"{{{NS_DATA}}}x", {"type": "submit"})
    hidden = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(hidden, f"{{{NS_DATA}}}value").text = NODE_CONFIG
    for key, value in config.items():
        var = key if "#" in key else f"pubsub#{key}"
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
        if isinstance(value, bool):
            values: Sequence[str] = ["1" if value else "0"]
        elif isinstance(value, int | str):
            values = [str(value)]
        else:
            values = list(value)
        for text in values:
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = text
    return form
