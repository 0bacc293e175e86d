"""The XEP-0277 parser on the XEP's own examples, on a full entry, and on random text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from pubsub_cache.projector.parsers import MicroblogParser, ParsedPayload, parse_xep0082_datetime
from pubsub_cache.projector.parsers.microblog import ATOM_NS, parse_xmpp_uri
from pubsub_cache.projector.xmlsafe import PayloadParseError, parse_payload

PAYLOADS = Path(__file__).parent.parent / "data" / "payloads"
PARSER = MicroblogParser()


def parse_file(name: str) -> ParsedPayload:
    return PARSER.parse(parse_payload((PAYLOADS / name).read_bytes()))


def parse_text(xml: str) -> ParsedPayload:
    return PARSER.parse(parse_payload(xml))


def test_parser_identity_is_stable() -> None:
    assert (PARSER.name, PARSER.version, PARSER.namespace) == ("xep-0277", 1, ATOM_NS)


def test_full_entry_reads_every_field() -> None:
    parsed = parse_file("microblog_full.xml")
    div = parsed.data.pop("content_xhtml")
    assert parsed.data == {
        "kind": "entry",
        "id": "tag:montague.lit,2008-05-08:posts-1cb57d9c-1c46-11dd-838c-001143d5d5db",
        "title": "Hanging out at the Café Napolitano",
        "title_xhtml": None,
        "content": "Cappuccino & cannoli,\nthen a walk by the river.",
        "author": {
            "name": "Romeo Montague",
            "jid": "romeo@montague.lit",
            "email": "romeo@montague.lit",
            "uri": "xmpp:romeo@montague.lit",
        },
        "published": "2008-05-08T18:30:02.123456+00:00",
        "updated": "2008-05-08T18:45:00+00:00",
        "tags": ["coffee", "verona"],
        "links": [
            {
                "rel": "alternate",
                "href": "http://montague.lit/romeo/posts/1cb57d9c-1c46-11dd-838c-001143d5d5db",
                "type": "text/html",
                "title": None,
            },
            {
                "rel": "replies",
                "href": "xmpp:pubsub.montague.lit?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments"
                "%2Fdd88c9bc58886fce0049ed050df0c5f2",
                "type": None,
                "title": "comments",
            },
            {
                "rel": "via",
                "href": "xmpp:juliet@capulet.lit?;node=urn%3Axmpp%3Amicroblog%3A0;item=abc",
                "type": None,
                "title": None,
            },
        ],
        "comments": [
            {
                "service": "pubsub.montague.lit",
                "node": "urn:xmpp:microblog:0:comments/dd88c9bc58886fce0049ed050df0c5f2",
                "uri": "xmpp:pubsub.montague.lit?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments"
                "%2Fdd88c9bc58886fce0049ed050df0c5f2",
            }
        ],
        "in_reply_to": [
            {
                "ref": "tag:capulet.lit,2008-05-08:posts-abc",
                "href": "http://capulet.lit/juliet/posts/abc",
            },
            {
                "ref": "tag:capulet.lit,2008-05-08:posts-abc",
                "href": "xmpp:juliet@capulet.lit?;node=urn%3Axmpp%3Amicroblog%3A0;item=abc",
            },
        ],
        "language": "en",
    }
    # The XHTML is kept as a serialised, namespaced div that parses back to the same text.
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert etree.fromstring(div).findtext(".//{http://www.w3.org/1999/xhtml}strong") == "cannoli"
    assert parsed.text == (
        "Hanging out at the Café Napolitano\nCappuccino & cannoli,\nthen a walk by the river.\n"
        "coffee\nverona"
    )
    assert parsed.published == datetime(2008, 5, 8, 18, 30, 2, 123456, tzinfo=UTC)
    assert parsed.updated == datetime(2008, 5, 8, 18, 45, tzinfo=UTC)


def test_parsed_data_is_json_serialisable() -> None:
    for path in sorted(PAYLOADS.glob("microblog_*.xml")):
        parsed = PARSER.parse(parse_payload(path.read_bytes()))
        assert msgspec.json.decode(msgspec.json.encode(parsed.data)) == parsed.data


def test_minimal_entry_from_the_xep_gives_defaults_for_missing_fields() -> None:
    parsed = parse_file("microblog_minimal.xml")
    # The XEP's example escapes the entity twice, so the text really is "Caf&#233;".
    assert parsed.data["title"] == "hanging out at the Caf&#233; Napolitano"
    assert parsed.data["content"] is None
    assert parsed.data["content_xhtml"] is None
    assert parsed.data["author"] is None
    assert parsed.data["tags"] == []
    assert parsed.data["links"] == []
    assert parsed.data["comments"] == []
    assert parsed.data["in_reply_to"] == []
    assert parsed.data["language"] is None
    assert parsed.text == "hanging out at the Caf&#233; Napolitano"
    assert parsed.published == parsed.updated == datetime(2008, 5, 8, 18, 30, 2, tzinfo=UTC)


def test_xhtml_title_keeps_markup_and_gives_plain_text() -> None:
    parsed = parse_file("microblog_xhtml_title.xml")
    assert parsed.data["title"] == "hanging out at the Café Napolitano"
    assert "<strong>Café Napolitano</strong>" in parsed.data["title_xhtml"]
    assert "<" not in parsed.text


def test_xhtml_only_content_gives_plain_text_without_markup() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title><content type='xhtml'>"
        "<div xmlns='http://www.w3.org/1999/xhtml'><p>one <em>two</em></p>\n  <p>three</p></div>"
        "</content></entry>"
    )
    assert parsed.data["content"] == "one two three"
    assert parsed.data["content_xhtml"].startswith("<div")
    assert parsed.text == "t\none two three"


def test_html_content_is_reduced_to_text_without_scripts() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title type='html'>&lt;b&gt;Bold&lt;/b&gt; move</title>"
        "<content type='html'>&lt;p&gt;Hi &amp;amp; bye&lt;script&gt;steal()&lt;/script&gt;"
        "&lt;/p&gt;</content></entry>"
    )
    assert parsed.data["title"] == "Bold move"
    assert parsed.data["content"] == "Hi & bye"
    assert "steal" not in parsed.text
    assert "<" not in parsed.text


def test_comments_link_is_percent_decoded_into_service_and_node() -> None:
    parsed = parse_file("microblog_comments_link.xml")
    assert parsed.data["comments"] == [
        {
            "service": "pubsub.montague.lit",
            "node": "urn:xmpp:microblog:0:comments/36ec6dfe61e52b1e2cdb248823520233",
            "uri": "xmpp:pubsub.montague.lit?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments"
            "%2F36ec6dfe61e52b1e2cdb248823520233",
        }
    ]
    # The geotag extension inside the entry is ignored, not an error.
    assert parsed.data["title"] == "Is lost in the forest. Need help!"


def test_non_xmpp_comments_link_stays_in_links_only() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title>"
        "<link rel='replies' title='comments' href='https://example.org/comments/1'/></entry>"
    )
    assert parsed.data["comments"] == []
    assert parsed.data["links"][0]["href"] == "https://example.org/comments/1"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("xmpp:romeo@montague.lit", ("romeo@montague.lit", {})),
        (
            "xmpp:pubsub.example.org?;node=a%20b%2Fc;item=i%3B1",
            ("pubsub.example.org", {"node": "a b/c", "item": "i;1"}),
        ),
        (
            "xmpp:svc.example?pubsub;action=subscribe;node=n",
            ("svc.example", {"action": "subscribe", "node": "n"}),
        ),
        ("XMPP:caf%C3%A9@example.org?;node=n#frag", ("café@example.org", {"node": "n"})),
        ("xmpp://me@example.org/pubsub.example.org?;node=n", ("pubsub.example.org", {"node": "n"})),
        (
            "xmpp:svc.example?;\n      node=urn%3Axmpp%3Amicroblog%3A0",
            ("svc.example", {"node": "urn:xmpp:microblog:0"}),
        ),
        ("https://example.org/", None),
        ("", None),
    ],
)
def test_xmpp_uri_parsing(uri: str, expected: tuple[str, dict[str, str]] | None) -> None:
    assert parse_xmpp_uri(uri) == expected


def test_reply_from_the_xep_lists_both_in_reply_to_targets() -> None:
    parsed = parse_file("microblog_reply.xml")
    target = "tag:montague.lit,2008-05-08:posts-1cb57d9c-1c46-11dd-838c-001143d5d5db"
    assert [reply["ref"] for reply in parsed.data["in_reply_to"]] == [target, target]
    assert parsed.data["in_reply_to"][1]["href"].startswith("xmpp:romeo@montague.lit?;")
    assert parsed.data["author"]["jid"] == "benvolio@montague.lit"


def test_comment_entry_without_id_or_updated_parses() -> None:
    parsed = parse_file("microblog_comment.xml")
    assert parsed.data["id"] is None
    assert parsed.data["updated"] is None
    assert parsed.updated is None
    assert parsed.published == datetime(2008, 5, 8, 18, 39, 2, tzinfo=UTC)
    assert parsed.data["author"]["name"] == "Juliet Capulet"


def test_repeated_post_keeps_via_link_and_tags() -> None:
    parsed = parse_file("microblog_repeat.xml")
    assert [link["rel"] for link in parsed.data["links"]] == ["alternate", "via"]
    assert parsed.data["tags"] == ["humour", "xmpp"]
    assert parsed.text == "hanging out at the Café Napolitano\nhumour\nxmpp"


def test_blog_metadata_feed_is_read_as_kind_feed() -> None:
    parsed = parse_file("microblog_feed.xml")
    assert parsed.data["kind"] == "feed"
    assert parsed.data["title"] == "Romeo's Microblog"
    assert parsed.data["author"]["jid"] == "romeo@montague.lit"


def test_language_falls_back_to_the_content_language() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title><content xml:lang='fr'>bonjour</content></entry>"
    )
    assert parsed.data["language"] == "fr"


def test_author_with_http_uri_has_no_jid() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title>"
        "<author><name>Web</name><uri>https://example.org/~web</uri></author></entry>"
    )
    assert parsed.data["author"] == {
        "name": "Web",
        "jid": None,
        "email": None,
        "uri": "https://example.org/~web",
    }


def test_timestamps_with_offsets_are_converted_to_utc() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title>"
        "<published>2024-01-01T01:30:00+05:30</published>"
        "<updated>2023-12-31T15:00:00-05:00</updated></entry>"
    )
    assert parsed.published == datetime(2023, 12, 31, 20, 0, tzinfo=UTC)
    assert parsed.updated == datetime(2023, 12, 31, 20, 0, tzinfo=UTC)
    assert parsed.data["published"] == "2023-12-31T20:00:00+00:00"


def test_garbage_dates_give_none_not_a_crash() -> None:
    parsed = parse_text(
        f"<entry xmlns='{ATOM_NS}'><title>t</title>"
        "<published>yesterday at noon</published><updated>2024-13-45T99:99:99Z</updated></entry>"
    )
    assert parsed.published is None
    assert parsed.updated is None
    assert parsed.data["published"] is None
    assert parsed.data["updated"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2008-05-08T18:30:02Z", datetime(2008, 5, 8, 18, 30, 2, tzinfo=UTC)),
        ("2008-05-08T18:30:02.5Z", datetime(2008, 5, 8, 18, 30, 2, 500000, tzinfo=UTC)),
        ("2008-05-08T18:30:02.123456789Z", datetime(2008, 5, 8, 18, 30, 2, 123456, tzinfo=UTC)),
        ("2008-05-08T20:30:02+02:00", datetime(2008, 5, 8, 18, 30, 2, tzinfo=UTC)),
        ("2008-05-08T18:30:02", datetime(2008, 5, 8, 18, 30, 2, tzinfo=UTC)),
        ("  2008-05-08T18:30:02z\n", datetime(2008, 5, 8, 18, 30, 2, tzinfo=UTC)),
        ("2004-02-19T21:12Z", datetime(2004, 2, 19, 21, 12, tzinfo=UTC)),
        ("2008-05-08", None),
        ("20080508T18:30:02", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("2008-05-08T25:00:00Z", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_xep0082_datetime_parsing(value: str | None, expected: datetime | None) -> None:
    assert parse_xep0082_datetime(value) == expected


def test_non_atom_root_raises_payload_parse_error() -> None:
    with pytest.raises(PayloadParseError) as caught:
        parse_text("<tune xmlns='http://jabber.org/protocol/tune'/>")
    assert caught.value.reason == "unexpected-root"


# Characters XML 1.0 can carry (the parser never sees anything else).
_XML_TEXT = st.text(
    st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc"),
        include_characters="\t\n\r",
        exclude_characters="\ufffe\uffff",
    ),
    max_size=200,
)


def _entry(title: str, content: str, content_type: str | None = None) -> bytes:
    entry = etree.Element(f"{{{ATOM_NS}}}entry")
    etree.SubElement(entry, f"{{{ATOM_NS}}}title").text = title
    content_element = etree.SubElement(entry, f"{{{ATOM_NS}}}content")
    content_element.text = content
    if content_type is not None:
        content_element.set("type", content_type)
    return etree.tostring(entry)


@settings(max_examples=200, deadline=None)
@given(title=_XML_TEXT, content=_XML_TEXT)
def test_random_title_and_content_round_trip_into_data(title: str, content: str) -> None:
    parsed = PARSER.parse(parse_payload(_entry(title, content)))
    assert parsed.data["title"] == title.strip()
    assert parsed.data["content"] == content.strip()
    for part in (title.strip(), content.strip()):
        assert part in parsed.text


@settings(max_examples=200, deadline=None)
@given(
    title=_XML_TEXT,
    content=_XML_TEXT,
    content_type=st.sampled_from([None, "text", "html", "xhtml", "text/plain", "image/png", ""]),
)
def test_random_text_never_raises_anything_but_payload_parse_error(
    title: str, content: str, content_type: str | None
) -> None:
    try:
        parsed = PARSER.parse(parse_payload(_entry(title, content, content_type)))
    except PayloadParseError:
        return
    msgspec.json.encode(parsed.data)
