"""Pubsub notifications, as received, turned into events: pure functions over ElementTree.

Input is the raw ``<message>`` element (``msg.xml`` in slixmpp); output is a list of events in
document order. Nothing here touches the network, the clock or slixmpp's stanza objects.

Who may speak for a node (invariant 7)
--------------------------------------
A notification is accepted only when its ``from`` is a *bare* JID, and the event is then
attributed to that JID as the service: ``pubsub.localhost`` for a pubsub component, or
``bob@localhost`` for Bob's PEP service. The rule is enough because the sender's server stamps
``from`` on everything a client sends with the client's *full* JID (RFC 6120 §8.1.2.1), so:

- a PEP notification comes from the account's bare JID, which only the account's own server
  (acting as its PEP service) can use; a client of that account cannot;
- a pubsub component addresses us from its domain JID; XEP-0060 services never use a resource.

So a full JID (``mallory@localhost/res``, ``pubsub.localhost/x``) is always a client or some
entity other than a pubsub service, and can never be a legitimate sender. A message without
``from`` names no service at all (servers stamp it on PEP and pubsub notifications), and we
refuse to guess one. Error messages are not notifications. Each of these yields one
:class:`NotificationRejected` per child of ``<event>`` (with the full ``from``, or
``"(missing)"``, as ``service``) so that rejections are logged and counted, never dropped.

Any bare JID passes, which is safe: the event names that JID as its service, so a sender can
only ever speak for its own nodes. Whether we care about that service is the ingest's call.
Only ``<event>`` elements that are direct children of the message count: one nested in a
forwarded message (carbons, XEP-0297) was sent by someone else and must not borrow this
message's ``from``.

Malformed children from an accepted sender (no ``node``, an item without ``id``, two payload
elements, an unknown subscription state, an unknown child) become :class:`NotificationRejected`
in their place too; the rest of the message is still translated.

So does a value over the event limits (invariant 11, :mod:`pubsub_cache.events.limits`): a node
name, item id or JID longer than 3071 characters could not be decoded once logged, and would
park every later event of its node. The part holding it is rejected (and counted) in its place;
a rejection names an oversized ``from`` or node by its first characters.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Literal, NamedTuple

from pubsub_cache.events.errors import InvalidEvent
from pubsub_cache.events.limits import MAX_TEXT
from pubsub_cache.events.types import (
    Item,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodeEvent,
    NodePurged,
    NotificationRejected,
    SubscriptionChanged,
)

from .stanzas import NS_DATA, form_fields, item_from_element, message_delay

NS_EVENT = "http://jabber.org/protocol/pubsub#event"
MISSING = "(missing)"
"""Stands for an absent ``from`` or ``node`` in a :class:`NotificationRejected`."""

_SubscriptionState = Literal["none", "pending", "subscribed", "unconfigured"]
_SUBSCRIPTION_STATES: dict[str, _SubscriptionState] = {
    "none": "none",
    "pending": "pending",
    "subscribed": "subscribed",
    "unconfigured": "unconfigured",
}


def events_from_message(
    message: ET.Element, *, account: str, observed_at: datetime
) -> list[NodeEvent]:
    """The events carried by one received ``<message>``, in document order.

    ``[]`` when the message holds no pubsub ``<event>``; see the module docstring for what is
    rejected and why.
    """
    # Direct children only: an <event> nested in a forwarded message (carbons, XEP-0297) was
    # sent by someone else, and must not borrow this message's from.
    events_elements = message.findall(f"{{{NS_EVENT}}}event")
    children = [child for event in events_elements for child in event]
    if not children:
        return []
    sender = message.get("from") or ""
    refusal = _refusal(message, sender)
    if refusal is not None:
        scope = _Scope(account, observed_at, _clip(sender) or MISSING, "")
        return [scope.rejected(child.get("node"), refusal) for child in children]
    delay = message_delay(message)
    events: list[NodeEvent] = []
    for child in children:
        scope = _Scope(account, observed_at, sender, child.get("node") or "")
        if not scope.node:
            events.append(scope.rejected(None, f"<{_local(child.tag)}> without a node"))
        elif len(scope.node) > MAX_TEXT:
            reason = f"node name of {len(scope.node)} characters, over the limit of {MAX_TEXT}"
            events.append(scope.rejected(None, reason))
        else:
            try:
                events.extend(_translate(child, scope, delay))
            except InvalidEvent as exc:  # a value over the limits, e.g. a subscription's jid
                events.append(scope.rejected(None, f"<{_local(child.tag)}> refused: {exc.reason}"))
    return events


class _Scope(NamedTuple):
    """What every event of one ``<event>`` child shares."""

    account: str
    observed_at: datetime
    service: str
    node: str

    def rejected(self, node: str | None, reason: str) -> NotificationRejected:
        return NotificationRejected(
            account=self.account,
            observed_at=self.observed_at,
            service=self.service,
            node=_clip(node or self.node) or MISSING,
            reason=reason,
        )


def _refusal(message: ET.Element, sender: str) -> str | None:
    if message.get("type") == "error":
        return "an error message is not a notification"
    if not sender:
        return "no from: a notification must come from the pubsub service's bare JID"
    if len(sender) > MAX_TEXT:
        return f"from is a JID of {len(sender)} characters, over the limit of {MAX_TEXT}"
    if "/" in sender:
        return f"from {sender} is a full JID: pubsub services and PEP notify from a bare JID"
    return None


def rejection_kind(reason: str) -> str:
    """The kind of a rejection's ``reason``, one of a few (a metric's label cannot hold the
    reason itself: it names JIDs and sizes)."""
    for start, kind in _KINDS:
        if reason.startswith(start):
            return kind
    if reason.endswith("without a node"):
        return "no-node"
    return "over-limit" if "refused:" in reason else "other"


#: The start of each reason this module gives, and its kind.
_KINDS = (
    ("an error message", "error-message"),
    ("no from", "no-from"),
    ("from is a JID of", "over-limit"),
    ("from ", "full-jid"),
    ("node name of", "over-limit"),
    ("<retract> refused", "over-limit"),
    ("unsupported event child", "unsupported"),
    ("malformed", "malformed"),
)


def _clip(value: str) -> str:
    # What a rejection can hold of an oversized value: its head, marked as cut.
    return value if len(value) <= MAX_TEXT else f"{value[: MAX_TEXT - 1]}\N{HORIZONTAL ELLIPSIS}"


def _translate(child: ET.Element, scope: _Scope, delay: datetime | None) -> list[NodeEvent]:
    account, observed_at, service, node = scope
    tag = child.tag
    if tag == f"{{{NS_EVENT}}}items":
        return _items(child, scope, delay)
    if tag == f"{{{NS_EVENT}}}purge":
        return [NodePurged(account=account, observed_at=observed_at, service=service, node=node)]
    if tag == f"{{{NS_EVENT}}}delete":
        redirect = child.find(f"{{{NS_EVENT}}}redirect")
        uri = (redirect.get("uri") if redirect is not None else None) or None
        return [
            NodeDeleted(
                account=account, observed_at=observed_at, service=service, node=node, redirect=uri
            )
        ]
    if tag == f"{{{NS_EVENT}}}configuration":
        form = child.find(f"{{{NS_DATA}}}x")
        fields = form_fields(form) if form is not None else None
        return [
            NodeConfigured(
                account=account, observed_at=observed_at, service=service, node=node, form=fields
            )
        ]
    if tag == f"{{{NS_EVENT}}}subscription":
        state = _SUBSCRIPTION_STATES.get(child.get("subscription") or "")
        jid = child.get("jid")
        if state is None or not jid:
            attrs = f"jid={jid!r} subscription={child.get('subscription')!r}"
            return [scope.rejected(None, f"malformed <subscription>: {attrs}")]
        subid = child.get("subid") or None
        return [
            SubscriptionChanged(
                account=account,
                observed_at=observed_at,
                service=service,
                node=node,
                jid=jid,
                subscription=state,
                subid=subid,
            )
        ]
    return [scope.rejected(None, f"unsupported event child <{_local(tag)}> ({_namespace(tag)})")]


def _items(element: ET.Element, scope: _Scope, delay: datetime | None) -> list[NodeEvent]:
    # Runs of <item> and runs of <retract> become separate events in document order: an
    # <items> holding <item id=a/><retract id=a/><item id=a/> must leave item a present.
    account, observed_at, service, node = scope
    events: list[NodeEvent] = []
    published: list[Item] = []
    retracted: list[str] = []

    def flush() -> None:
        if published:
            events.append(
                ItemsPublished(
                    account=account,
                    observed_at=observed_at,
                    service=service,
                    node=node,
                    items=published.copy(),
                )
            )
            published.clear()
        if retracted:
            events.append(
                ItemsRetracted(
                    account=account,
                    observed_at=observed_at,
                    service=service,
                    node=node,
                    item_ids=retracted.copy(),
                )
            )
            retracted.clear()

    for child in element:
        if child.tag == f"{{{NS_EVENT}}}item":
            try:
                item = item_from_element(child, delay=delay)
            except InvalidEvent as exc:  # over the limits: an id of 3072 characters
                flush()
                events.append(scope.rejected(None, f"<item> refused: {exc.reason}"))
                continue
            except ValueError as exc:
                flush()
                events.append(scope.rejected(None, f"malformed <item>: {exc}"))
                continue
            if retracted:
                flush()
            published.append(item)
        elif child.tag == f"{{{NS_EVENT}}}retract" and child.get("id"):
            item_id = child.get("id") or ""
            if len(item_id) > MAX_TEXT:
                flush()
                reason = f"<retract> refused: id of {len(item_id)} characters, over {MAX_TEXT}"
                events.append(scope.rejected(None, reason))
                continue
            if published:
                flush()
            retracted.append(item_id)
        elif isinstance(child.tag, str):
            flush()
            what = "<retract> without an id" if child.get("id") is None else _local(child.tag)
            events.append(scope.rejected(None, f"malformed <items>: it holds {what}"))
    flush()
    return events


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""
