"""The event types and their codec: validation, round trips, and the golden corpus.

The golden corpus (tests/data/golden/) holds events encoded by earlier versions of the code.
Each file must keep decoding to the same event forever: a failure here means a change broke
stored logs. To add a file for a new event type, run the suite once with
PUBSUB_CACHE_WRITE_GOLDEN=1; existing files are never rewritten.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import msgspec
import pytest

from helpers import ACCOUNT, SERVICE, at
from pubsub_cache.events import (
    AnyEvent,
    CachePurged,
    CacheReset,
    InvalidEvent,
    Item,
    ItemsListed,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodePurged,
    NotificationRejected,
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncRequested,
    SyncStarted,
    UndecodableEvent,
    decode,
    encode,
    encode_valid,
    event_tag,
)
from pubsub_cache.events.codec import decode_json, encode_json
from pubsub_cache.events.types import EVENT_TYPES

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
NODE = "urn:xmpp:microblog:0"
ENTRY = "<entry xmlns='http://www.w3.org/2005/Atom'><title>Hello</title></entry>"


class Common(TypedDict):
    account: str
    service: str
    node: str
    observed_at: datetime


def golden_events() -> list[AnyEvent]:
    """One event of every type, with every field set: the content of the golden corpus v1."""
    common: Common = {"account": ACCOUNT, "service": SERVICE, "node": NODE, "observed_at": at(1)}
    return [
        ItemsPublished(
            **common,
            items=[
                Item(id="1", publisher="juliet@capulet.lit", payload=ENTRY, delay=at(-60)),
                Item(id="2"),
            ],
        ),
        ItemsRetracted(**common, item_ids=["1", "2"]),
        NodePurged(**common),
        NodeDeleted(**common, redirect="xmpp:pubsub.capulet.lit?;node=new"),
        NodeConfigured(**common, form={"pubsub#max_items": ["max"], "pubsub#title": ["T"]}),
        SubscriptionChanged(**common, jid=ACCOUNT, subscription="subscribed", subid="s1"),
        SyncRequested(**common, reason="first read by a client"),
        SyncStarted(**common, sync_id="sync-1"),
        SyncPageFetched(**common, sync_id="sync-1", items=[Item(id="1", payload=ENTRY)], page=0),
        SyncCompleted(**common, sync_id="sync-1", complete=False, item_count=1, reason="no RSM"),
        SyncFailed(**common, sync_id="sync-1", error="node gone", condition="item-not-found"),
        NotificationRejected(**common, source="notification", reason="sender has a resource"),
        ItemsListed(**common, item_ids=["1", "2"], complete=False, via="disco#items"),
        CachePurged(account=ACCOUNT, observed_at=at(1), service=SERVICE, older_than=at(-3600)),
        CacheReset(account=ACCOUNT, observed_at=at(1), node=NODE),
    ]


def test_fields_added_since_v1_round_trip() -> None:
    # The v1 corpus predates these fields: their defaults are covered by it, their values here.
    common: Common = {"account": ACCOUNT, "service": SERVICE, "node": NODE, "observed_at": at(1)}
    events: list[AnyEvent] = [
        SyncStarted(**common, sync_id="s", order="modification"),
        SyncPageFetched(**common, sync_id="s", items=[Item(id="1")], page=2, offset=200),
    ]
    for event in events:
        assert decode(encode(event)) == event
        assert decode_json(encode_json(event)) == event
    with pytest.raises(InvalidEvent, match="offset"):
        SyncPageFetched(**common, sync_id="s", items=[], offset=-1)


def test_every_event_type_has_a_golden_example() -> None:
    assert {type(event) for event in golden_events()} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", golden_events(), ids=event_tag)
@pytest.mark.parametrize("form", ["msgpack", "json"])
def test_golden_files_keep_decoding_to_the_same_event(event: AnyEvent, form: str) -> None:
    path = GOLDEN / "v1" / f"{event_tag(event)}.{form}"
    data = encode(event) if form == "msgpack" else encode_json(event)
    if not path.exists() and os.environ.get("PUBSUB_CACHE_WRITE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"missing golden file {path}: run once with PUBSUB_CACHE_WRITE_GOLDEN=1"
    stored = path.read_bytes()
    decoded = decode(stored) if form == "msgpack" else decode_json(stored)
    assert decoded == event


def test_old_bytes_without_newer_optional_fields_still_decode() -> None:
    # As an old writer would have stored it: no "source", no "v", no optional fields.
    old = msgspec.msgpack.encode(
        {
            "type": "node-deleted",
            "account": ACCOUNT,
            "service": SERVICE,
            "node": NODE,
            "observed_at": at(0),
        }
    )
    event = decode(old)
    assert event == NodeDeleted(account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0))
    assert event.v == 1
    assert event.source == "notification"


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    newer = msgspec.msgpack.encode(
        {
            "type": "node-purged",
            "v": 2,
            "account": ACCOUNT,
            "service": SERVICE,
            "node": NODE,
            "observed_at": at(0),
            "added_later": [1, 2, 3],
        }
    )
    assert isinstance(decode(newer), NodePurged)


@pytest.mark.parametrize("event", golden_events(), ids=event_tag)
def test_round_trip_through_both_encodings(event: AnyEvent) -> None:
    assert decode(encode(event)) == event
    assert decode_json(encode_json(event)) == event


def test_tags_are_stable_and_distinct() -> None:
    tags = [event_tag(event) for event in golden_events()]
    assert len(set(tags)) == len(tags)
    assert "items-published" in tags
    assert "sync-page" in tags


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"account": ""}, "account must be a non-empty string"),
        ({"service": ""}, "service must be a non-empty string"),
        ({"node": 7}, "node must be a non-empty string"),
        ({"observed_at": datetime(2026, 1, 1)}, "observed_at must be a timezone-aware"),
        ({"items": []}, "items must be a non-empty list"),
        ({"items": ["1"]}, "items must be Item structs"),
    ],
)
def test_an_invalid_event_cannot_be_built(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "account": ACCOUNT,
        "service": SERVICE,
        "node": NODE,
        "observed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "items": [Item(id="1")],
    }
    values.update(fields)
    with pytest.raises(InvalidEvent, match=message) as caught:
        ItemsPublished(**values)  # type: ignore[arg-type]
    assert str(caught.value).startswith("invalid items-published event: ")


def test_an_invalid_item_cannot_be_built() -> None:
    with pytest.raises(InvalidEvent, match="id must be a non-empty string"):
        Item(id="")
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        Item(id="1", delay=datetime(2026, 1, 1))


def test_encode_valid_names_the_foreign_object_in_a_batch() -> None:
    good = NodePurged(account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0))
    with pytest.raises(InvalidEvent, match=r"event 1 of the batch"):
        encode_valid([good, {"type": "node-purged"}])


def test_stored_bytes_breaking_a_constraint_are_undecodable_with_position() -> None:
    bad = msgspec.msgpack.encode(
        {
            "type": "items-retracted",
            "account": ACCOUNT,
            "service": SERVICE,
            "node": NODE,
            "observed_at": at(0),
            "item_ids": [""],
        }
    )
    with pytest.raises(UndecodableEvent, match="at position 42"):
        decode(bad, position=42)


def test_garbage_is_undecodable() -> None:
    with pytest.raises(UndecodableEvent):
        decode(b"\xc1not msgpack")
    with pytest.raises(UndecodableEvent):
        decode(msgspec.msgpack.encode({"type": "no-such-event"}))
