"""Invariant 11: every event that can be built can be decoded (events/limits.py).

The decoder's limits (types, lengths counted in characters, Literals, aware datetimes, list
lengths) hold when an event is built, for every event type, including types added later: the
valid examples are generated from msgspec's description of each type, not listed by hand.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
import msgspec.inspect as mi
import pytest

from helpers import ACCOUNT, NODE, SERVICE, at
from pubsub_cache.events import (
    InvalidEvent,
    Item,
    ItemsPublished,
    ItemsRetracted,
    NotificationRejected,
    SubscriptionChanged,
    SyncStarted,
    decode,
    encode,
    event_tag,
)
from pubsub_cache.events.codec import decode_json, encode_json
from pubsub_cache.events.limits import MAX_TEXT, compile_rules
from pubsub_cache.events.types import EVENT_TYPES, Event

#: Values each field is tried with: every one must either be refused when built or decode.
HOSTILE: list[object] = [
    "",
    "x",
    "x" * MAX_TEXT,
    "x" * (MAX_TEXT + 1),
    "\N{GRINNING FACE}" * MAX_TEXT,
    "\N{GRINNING FACE}" * (MAX_TEXT + 1),
    None,
    0,
    -1,
    True,
    1.5,
    [],
    [""],
    ["x" * (MAX_TEXT + 1)],
    [Item(id="1")],
    ["1"],
    {"a": ["b"]},
    {"a": [1]},
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=UTC),
    "no-such-literal",
    "command",
    "subscribed",
]


def example(t: mi.Type) -> object:
    """A valid value of msgspec type ``t``."""
    match t:
        case mi.StrType(min_length=low):
            return "x" * (low or 0)
        case mi.IntType(ge=ge, gt=gt):
            return ge if ge is not None else (gt + 1 if gt is not None else 0)
        case mi.FloatType():
            return 0.0
        case mi.BoolType():
            return True
        case mi.LiteralType(values=values):
            return values[0]
        case mi.DateTimeType():
            return at(0)
        case mi.StructType(cls=cls):
            return Item(id="1") if cls is Item else build(cls)
        case mi.ListType(item_type=item, min_length=low):
            return [example(item)] * max(1, low or 0)
        case mi.DictType():
            return {}
        case mi.UnionType(types=types):
            return example(next(m for m in types if not isinstance(m, mi.NoneType)))
        case mi.NoneType():
            return None
    raise AssertionError(f"no example for {t!r}")


def build(cls: type[msgspec.Struct]) -> msgspec.Struct:
    """A valid instance of ``cls`` with every required field set."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    values = {f.name: example(f.type) for f in info.fields if f.required}
    return cls(**values)


def fields_of(cls: type[msgspec.Struct]) -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return [f.name for f in info.fields]


@pytest.mark.parametrize("cls", [*EVENT_TYPES, Item], ids=lambda cls: cls.__name__)
def test_every_field_of_every_event_type_has_a_construction_check(
    cls: type[msgspec.Struct],
) -> None:
    assert [name for name, _ in compile_rules(cls)] == fields_of(cls)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_whatever_can_be_built_can_be_decoded(cls: type[Event]) -> None:
    valid = build(cls)
    assert isinstance(valid, Event)
    assert decode(encode(valid)) == valid
    refusals: list[tuple[str, InvalidEvent]] = []
    for name, value in itertools.product(fields_of(cls), HOSTILE):
        try:
            event = msgspec.structs.replace(valid, **{name: value})
        except InvalidEvent as exc:
            refusals.append((name, exc))
            continue
        assert isinstance(event, Event)
        assert decode(encode(event)) == event, (name, value)
        assert decode_json(encode_json(event)) == event, (name, value)
    assert refusals
    for name, refusal in refusals:
        assert refusal.kind == event_tag(valid)
        assert f"{name} " in refusal.reason


def test_an_item_id_over_the_limit_is_refused_at_construction() -> None:
    Item(id="x" * MAX_TEXT)
    with pytest.raises(InvalidEvent, match="id must be a non-empty string of at most 3071"):
        Item(id="x" * (MAX_TEXT + 1))


def test_lengths_are_counted_in_characters_as_the_decoder_counts_them() -> None:
    # 3071 four-byte characters: 12284 bytes of UTF-8, yet within the limit for msgspec.
    long_node = "\N{GRINNING FACE}" * MAX_TEXT
    event = ItemsPublished(
        account=ACCOUNT, service=SERVICE, node=long_node, observed_at=at(0), items=[Item(id="1")]
    )
    assert decode(encode(event)) == event
    with pytest.raises(InvalidEvent, match="node must be"):
        ItemsPublished(
            account=ACCOUNT,
            service=SERVICE,
            node=long_node + "x",
            observed_at=at(0),
            items=[Item(id="1")],
        )


@pytest.mark.parametrize(
    ("build_event", "message"),
    [
        (
            lambda: ItemsRetracted(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                item_ids=["ok", "x" * (MAX_TEXT + 1)],
            ),
            r"item_ids \[1\] must be a non-empty string",
        ),
        (
            lambda: SubscriptionChanged(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                jid="x" * (MAX_TEXT + 1),
                subscription="subscribed",
            ),
            "jid must be",
        ),
        (
            lambda: SubscriptionChanged(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                jid=ACCOUNT,
                subscription="bogus",  # type: ignore[arg-type]
            ),
            "subscription must be one of",
        ),
        (
            lambda: SyncStarted(
                account=ACCOUNT, service=SERVICE, node=NODE, observed_at=at(0), sync_id=""
            ),
            "sync_id must be",
        ),
        (
            lambda: NotificationRejected(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                reason=None,  # type: ignore[arg-type]
            ),
            "reason must be a string",
        ),
        (
            lambda: ItemsPublished(
                account=ACCOUNT,
                service=SERVICE,
                node=NODE,
                observed_at=at(0),
                source="elsewhere",  # type: ignore[arg-type]
                items=[Item(id="1")],
            ),
            "source must be one of",
        ),
    ],
    ids=["retract-id", "jid", "subscription", "sync-id", "reason", "source"],
)
def test_fields_once_checked_only_by_the_decoder_are_checked_when_built(
    build_event: object, message: str
) -> None:
    assert callable(build_event)
    with pytest.raises(InvalidEvent, match=message):
        build_event()


def test_an_error_names_a_long_value_by_its_length_not_its_text() -> None:
    with pytest.raises(InvalidEvent) as caught:
        Item(id="y" * 5000)
    assert "5000 characters" in str(caught.value)
    assert len(str(caught.value)) < 300
