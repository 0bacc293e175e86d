"""Notification ``<message>`` stanzas, built by hand, translated into events (no server)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from pubsub_cache.events.codec import decode, encode
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
from pubsub_cache.xmpp.stanzas import payload_xml
from pubsub_cache.xmpp.translate import MISSING, events_from_message

ACCOUNT = "reader@localhost"
SERVICE = "pubsub.localhost"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EVENT = "http://jabber.org/protocol/pubsub#event"
ATOM = "<entry xmlns='http://www.w3.org/2005/Atom'><title>hi</title></entry>"


def message(body: str, *, sender: str | None = SERVICE, extra: str = "", kind: str = "") -> str:
    """A notification message holding ``<event>body</event>``."""
    attrs = f" from='{sender}'" if sender is not None else ""
    attrs += f" type='{kind}'" if kind else ""
    return (
        f"<message xmlns='jabber:client' to='{ACCOUNT}/r'{attrs}>"
        f"<event xmlns='{EVENT}'>{body}</event>{extra}</message>"
    )


def translate(xml: str) -> list[NodeEvent]:
    events = events_from_message(ET.fromstring(xml), account=ACCOUNT, observed_at=NOW)
    for event in events:  # every event is a valid log event
        assert decode(encode(event)) == event
    return events


def test_published_item_carries_payload_publisher_and_delay() -> None:
    delay = "<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2026-11-27T10:00:00.5Z'/>"
    body = f"<items node='blog'><item id='1' publisher='publisher@localhost'>{ATOM}</item></items>"

    [event] = translate(message(body, extra=delay))

    assert event == ItemsPublished(
        account=ACCOUNT,
        observed_at=NOW,
        service=SERVICE,
        node="blog",
        items=[
            Item(
                id="1",
                publisher="publisher@localhost",
                payload='<entry xmlns="http://www.w3.org/2005/Atom"><title>hi</title></entry>',
                delay=datetime(2026, 11, 27, 10, 0, 0, 500000, tzinfo=UTC),
            )
        ],
    )


def test_notify_only_item_has_no_payload_and_no_delay() -> None:
    [event] = translate(message("<items node='n'><item id='1'/></items>"))

    assert isinstance(event, ItemsPublished)
    assert event.items == [Item(id="1")]


def test_publishes_and_retracts_keep_document_order_as_separate_events() -> None:
    body = (
        "<items node='n'><item id='a'/><retract id='a'/><retract id='b'/>"
        "<item id='a'/><item id='c'/></items>"
    )

    events = translate(message(body))

    assert [type(e) for e in events] == [ItemsPublished, ItemsRetracted, ItemsPublished]
    assert isinstance(events[1], ItemsRetracted)
    assert events[1].item_ids == ["a", "b"]
    assert isinstance(events[2], ItemsPublished)
    assert [item.id for item in events[2].items] == ["a", "c"]


def test_purge_delete_and_redirect() -> None:
    redirect = "xmpp:pubsub.localhost?;node=new"
    body = f"<purge node='old'/><delete node='old'><redirect uri='{redirect}'/></delete>"

    purged, deleted = translate(message(body))

    assert purged == NodePurged(account=ACCOUNT, observed_at=NOW, service=SERVICE, node="old")
    assert isinstance(deleted, NodeDeleted)
    assert deleted.redirect == redirect
    [plain] = translate(message("<delete node='old'/>"))
    assert isinstance(plain, NodeDeleted)
    assert plain.redirect is None


def test_configuration_with_form_maps_fields_to_values() -> None:
    form = (
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
        "<field type='fixed'><value>a label</value></field>"
        "<field var='pubsub#title'><value>Princely musings</value></field>"
        "<field var='pubsub#access_model' type='list-single'><value>open</value>"
        "<option><value>open</value></option><option><value>roster</value></option></field>"
        "<field var='pubsub#children' type='text-multi'><value>a</value><value>b</value></field>"
        "<field var='pubsub#description'/>"
        "</x>"
    )

    [event] = translate(message(f"<configuration node='n'>{form}</configuration>"))

    assert isinstance(event, NodeConfigured)
    assert event.form == {
        "FORM_TYPE": ["http://jabber.org/protocol/pubsub#node_config"],
        "pubsub#title": ["Princely musings"],
        "pubsub#access_model": ["open"],
        "pubsub#children": ["a", "b"],
        "pubsub#description": [],
    }


def test_configuration_without_form() -> None:
    [event] = translate(message("<configuration node='n'/>"))

    assert event == NodeConfigured(
        account=ACCOUNT, observed_at=NOW, service=SERVICE, node="n", form=None
    )


def test_subscription_change() -> None:
    body = "<subscription node='n' jid='reader@localhost' subscription='pending' subid='s1'/>"

    [event] = translate(message(body))

    assert event == SubscriptionChanged(
        account=ACCOUNT,
        observed_at=NOW,
        service=SERVICE,
        node="n",
        jid="reader@localhost",
        subscription="pending",
        subid="s1",
    )


def test_pep_notification_from_the_owners_bare_jid_is_accepted() -> None:
    body = "<items node='urn:xmpp:avatar:metadata'><item id='x'/></items>"

    [event] = translate(message(body, sender="bob@localhost"))

    assert isinstance(event, ItemsPublished)
    assert event.service == "bob@localhost"


def test_message_without_pubsub_event_gives_nothing() -> None:
    xml = "<message xmlns='jabber:client' from='bob@localhost/r'><body>hi</body></message>"

    assert translate(xml) == []


@pytest.mark.parametrize(
    "sender", ["mallory@localhost/evil", "pubsub.localhost/spoof", "bob@localhost/phone"]
)
def test_notification_from_a_full_jid_is_rejected(sender: str) -> None:
    body = "<items node='blog'><item id='1'/></items><purge node='other'/>"

    events = translate(message(body, sender=sender))

    assert events == [
        NotificationRejected(
            account=ACCOUNT,
            observed_at=NOW,
            service=sender,
            node=node,
            reason=f"from {sender} is a full JID: pubsub services and PEP notify from a bare JID",
        )
        for node in ("blog", "other")
    ]


def test_notification_without_from_is_rejected() -> None:
    [event] = translate(message("<purge node='n'/>", sender=None))

    assert isinstance(event, NotificationRejected)
    assert (event.service, event.node) == (MISSING, "n")
    assert "no from" in event.reason


def test_error_message_is_not_a_notification() -> None:
    [event] = translate(message("<purge node='n'/>", kind="error"))

    assert isinstance(event, NotificationRejected)
    assert "error" in event.reason


def test_event_inside_a_forwarded_message_does_not_borrow_the_outer_from() -> None:
    # A carbon comes from the account's own bare JID; the forwarded message inside it was
    # written by mallory, who must not make it look like a PEP notification of the account.
    forwarded = (
        "<message xmlns='jabber:client' from='mallory@localhost/x' to='reader@localhost'>"
        f"<event xmlns='{EVENT}'><items node='n'><item id='1'/></items></event></message>"
    )
    carbon = (
        "<message xmlns='jabber:client' from='reader@localhost' to='reader@localhost/r'>"
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"{forwarded}</forwarded></received></message>"
    )

    assert translate(carbon) == []


def test_malformed_parts_are_rejected_in_place_and_the_rest_kept() -> None:
    body = (
        "<items node='n'><item id='1'/><item/><retract/><item id='2'><a xmlns='urn:a'/>"
        "<b xmlns='urn:b'/></item><item id='3'/></items>"
        "<purge/>"
        "<subscription node='n' jid='reader@localhost' subscription='maybe'/>"
        "<collection node='c' xmlns='http://jabber.org/protocol/pubsub#event'/>"
    )

    events = translate(message(body))

    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "ItemsPublished",
        "NotificationRejected",  # <item> without id
        "NotificationRejected",  # <retract> without id
        "NotificationRejected",  # two payload elements
        "ItemsPublished",
        "NotificationRejected",  # <purge> without node
        "NotificationRejected",  # unknown subscription state
        "NotificationRejected",  # unsupported child
    ]
    assert isinstance(events[0], ItemsPublished)
    assert [i.id for i in events[0].items] == ["1"]
    assert isinstance(events[4], ItemsPublished)
    assert [i.id for i in events[4].items] == ["3"]
    rejected = [e for e in events if isinstance(e, NotificationRejected)]
    assert [e.node for e in rejected] == ["n", "n", "n", MISSING, "n", "c"]
    assert all(e.service == SERVICE for e in rejected)


def test_unreadable_delay_stamp_is_ignored_and_naive_stamp_is_utc() -> None:
    body = "<items node='n'><item id='1'/></items>"
    bad = "<delay xmlns='urn:xmpp:delay' stamp='yesterday'/>"
    naive = "<delay xmlns='urn:xmpp:delay' stamp='2026-11-27T10:00:00'/>"

    [with_bad] = translate(message(body, extra=bad))
    [with_naive] = translate(message(body, extra=naive))

    assert isinstance(with_bad, ItemsPublished)
    assert with_bad.items[0].delay is None
    assert isinstance(with_naive, ItemsPublished)
    assert with_naive.items[0].delay == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def test_payload_xml_keeps_namespaces_namespaced_attributes_and_escapes() -> None:
    source = (
        "<item xmlns='http://jabber.org/protocol/pubsub#event' id='1'>"
        "<entry xmlns='http://www.w3.org/2005/Atom' xml:lang='fr'>"
        "<title type='text'>a &amp; &lt;b&gt; \"q\"</title>"
        "<x:geo xmlns:x='urn:x' x:unit='m&quot;'><inner/></x:geo>"
        "<plain xmlns=''>t</plain>tail</entry> ignored tail </item>"
    )
    payload = ET.fromstring(source)[0]

    text = payload_xml(payload)

    assert text == (
        '<entry xmlns="http://www.w3.org/2005/Atom" xml:lang="fr">'
        '<title type="text">a &amp; &lt;b&gt; "q"</title>'
        '<geo xmlns="urn:x" ns0:unit="m&quot;" xmlns:ns0="urn:x">'
        '<inner xmlns="http://www.w3.org/2005/Atom"/></geo>'
        '<plain xmlns="">t</plain>tail</entry>'
    )
    payload.tail = None
    assert ET.tostring(ET.fromstring(text)) == ET.tostring(payload)
