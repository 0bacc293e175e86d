"""The PEP payload parsers on the examples of XEP-0084, XEP-0080, XEP-0118 and XEP-0402."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from pubsub_cache.projector.parsers import (
    BUILTIN_PARSERS,
    AvatarMetadataParser,
    BookmarksParser,
    GeolocParser,
    ParsedPayload,
    Parser,
    TuneParser,
)
from pubsub_cache.projector.xmlsafe import PayloadParseError, parse_payload

PAYLOADS = Path(__file__).parent.parent / "data" / "payloads"


def parse_file(parser: Parser, name: str) -> ParsedPayload:
    parsed = parser.parse(parse_payload((PAYLOADS / name).read_bytes()))
    # Whatever a parser returns must fit the JSON ``parsed`` column unchanged.
    assert msgspec.json.decode(msgspec.json.encode(parsed.data)) == parsed.data
    return parsed


def test_builtin_parsers_have_unique_stable_identities() -> None:
    identities = [(parser.name, parser.version, parser.namespace) for parser in BUILTIN_PARSERS]
    assert identities == [
        ("xep-0277", 1, "http://www.w3.org/2005/Atom"),
        ("xep-0084", 1, "urn:xmpp:avatar:metadata"),
        ("xep-0080", 1, "http://jabber.org/protocol/geoloc"),
        ("xep-0118", 1, "http://jabber.org/protocol/tune"),
        ("xep-0402", 1, "urn:xmpp:bookmarks:1"),
    ]


def test_avatar_metadata_lists_every_info_with_typed_sizes() -> None:
    parsed = parse_file(AvatarMetadataParser(), "avatar_metadata.xml")
    assert parsed.data == {
        "infos": [
            {
                "id": "111f4b3c50d7b0df729d299bc6f8e9ef9066971f",
                "type": "image/png",
                "bytes": 12345,
                "width": 64,
                "height": 64,
                "url": None,
            },
            {
                "id": "e279f80c38f99c1e7e53e262b440993b2f7eea57",
                "type": "image/png",
                "bytes": 12345,
                "width": 128,
                "height": 64,
                "url": "http://avatars.example.org/happy.png",
            },
            {
                "id": "357a8123a30844a3aa99861b6349264ba67a5694",
                "type": "image/gif",
                "bytes": 23456,
                "width": None,
                "height": None,
                "url": "http://avatars.example.org/happy.gif",
            },
        ]
    }
    assert parsed.text == ""


def test_empty_avatar_metadata_means_avatar_disabled() -> None:
    parsed = parse_file(AvatarMetadataParser(), "avatar_metadata_disabled.xml")
    assert parsed.data == {"infos": []}


def test_avatar_metadata_with_garbage_sizes_keeps_the_info() -> None:
    parser = AvatarMetadataParser()
    parsed = parser.parse(
        parse_payload(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>"
            "<info id='abc' type='image/png' bytes='lots' width='-' height=''/></metadata>"
        )
    )
    assert parsed.data["infos"] == [
        {
            "id": "abc",
            "type": "image/png",
            "bytes": None,
            "width": None,
            "height": None,
            "url": None,
        }
    ]


def test_geolocation_from_the_xep_gives_floats_and_timestamp() -> None:
    parsed = parse_file(GeolocParser(), "geoloc.xml")
    assert parsed.data == {
        "accuracy": 20.0,
        "country": "Italy",
        "lat": 45.44,
        "locality": "Venice",
        "lon": 12.33,
        "timestamp": "2004-02-19T21:12:00+00:00",
        "language": "en",
    }
    assert parsed.published == datetime(2004, 2, 19, 21, 12, tzinfo=UTC)
    assert parsed.text == "Venice\nItaly"


def test_geolocation_drops_unreadable_numbers_and_foreign_children() -> None:
    parsed = GeolocParser().parse(
        parse_payload(
            "<geoloc xmlns='http://jabber.org/protocol/geoloc'>"
            "<lat>north-ish</lat><lon>nan</lon><alt>1e999</alt><speed> 3.5 </speed>"
            "<street>Via Roma</street><street>second street ignored</street>"
            "<extra xmlns='urn:example:ext'>ignored</extra><timestamp>soon</timestamp>"
            "</geoloc>"
        )
    )
    assert parsed.data == {
        "lat": None,
        "lon": None,
        "alt": None,
        "speed": 3.5,
        "street": "Via Roma",
        "timestamp": None,
    }
    assert parsed.published is None
    assert msgspec.json.encode(parsed.data)


def test_empty_geoloc_means_location_no_longer_published() -> None:
    parsed = GeolocParser().parse(
        parse_payload("<geoloc xmlns='http://jabber.org/protocol/geoloc'/>")
    )
    assert parsed.data == {}
    assert parsed.published is None


def test_tune_from_the_xep_reads_every_field() -> None:
    parsed = parse_file(TuneParser(), "tune.xml")
    assert parsed.data == {
        "artist": "Yes",
        "length": 686,
        "rating": 8,
        "source": "Yessongs",
        "title": "Heart of the Sunrise",
        "track": "3",
        "uri": "http://www.yesworld.com/lyrics/Fragile.html#9",
    }
    assert parsed.text == "Yes\nHeart of the Sunrise\nYessongs"


def test_empty_tune_means_stopped_listening() -> None:
    parsed = parse_file(TuneParser(), "tune_stopped.xml")
    assert parsed.data == dict.fromkeys(
        ("artist", "length", "rating", "source", "title", "track", "uri")
    )
    assert parsed.text == ""


def test_tune_with_garbage_length_keeps_the_rest() -> None:
    parsed = TuneParser().parse(
        parse_payload(
            "<tune xmlns='http://jabber.org/protocol/tune'><length>3:45</length>"
            "<title>Song</title></tune>"
        )
    )
    assert parsed.data["length"] is None
    assert parsed.data["title"] == "Song"


def test_bookmark_from_the_xep_reads_name_autojoin_and_nick() -> None:
    parsed = parse_file(BookmarksParser(), "bookmark.xml")
    assert parsed.data == {
        "name": "The Play's the Thing",
        "autojoin": True,
        "nick": "JC",
        "has_password": False,
    }
    assert parsed.text == "The Play's the Thing"


def test_bookmark_password_is_never_stored_only_its_presence() -> None:
    parsed = parse_file(BookmarksParser(), "bookmark_password_extensions.xml")
    assert parsed.data == {
        "name": "Orchard",
        "autojoin": False,
        "nick": "Romeo",
        "has_password": True,
    }
    stored = msgspec.json.encode(parsed.data).decode() + parsed.text
    assert "capulet-secret-2008" not in stored
    assert "minimized" not in stored  # extensions are client-private and ignored


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("autojoin='true'", True), ("autojoin='1'", True), ("autojoin='false'", False),
     ("autojoin='0'", False), ("autojoin='yes'", False), ("", False)],
)  # fmt: skip
def test_bookmark_autojoin_follows_xs_boolean(attribute: str, expected: bool) -> None:
    parsed = BookmarksParser().parse(
        parse_payload(f"<conference xmlns='urn:xmpp:bookmarks:1' {attribute}/>")
    )
    assert parsed.data["autojoin"] is expected
    assert parsed.data["name"] is None


@pytest.mark.parametrize(
    "parser", [AvatarMetadataParser(), GeolocParser(), TuneParser(), BookmarksParser()]
)
def test_wrong_payload_root_raises_payload_parse_error(parser: Parser) -> None:
    with pytest.raises(PayloadParseError) as caught:
        parser.parse(parse_payload("<entry xmlns='http://www.w3.org/2005/Atom'/>"))
    assert caught.value.reason == "unexpected-root"
