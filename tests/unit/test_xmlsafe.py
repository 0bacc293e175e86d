"""Invariant 8: hostile XML is harmless. Every hostile payload raises PayloadParseError, quickly."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.projector import xmlsafe
from pubsub_cache.projector.xmlsafe import PayloadParseError, parse_payload

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<entry xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></entry>"""

SECRET = "top-secret-contents-4f1d"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP port that records whether anything connected to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    yield server
    server.close()


def _nobody_connected(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_payload_parse_error_is_a_project_error_carrying_its_reason() -> None:
    error = PayloadParseError("too-large", "2000000 > 1048576 bytes")
    assert isinstance(error, PubsubCacheError)
    assert error.reason == "too-large"
    assert "too-large" in str(error)
    assert "2000000" in str(error)


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(BILLION_LAUGHS)
    assert caught.value.reason == "dtd"


def test_external_entity_to_a_real_file_is_refused_and_never_read(secret_file: Path) -> None:
    payload = (
        f'<!DOCTYPE entry [<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">]>'
        '<entry xmlns="http://www.w3.org/2005/Atom"><title>&xxe;</title></entry>'
    )
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload)
    assert caught.value.reason == "dtd"
    assert SECRET not in str(caught.value)


def test_configured_parser_alone_never_expands_a_file_entity(secret_file: Path) -> None:
    # Defence in depth: even if the DOCTYPE scan were bypassed, the parser must not read the file.
    payload = (f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">]><r>&xxe;</r>').encode()
    try:
        seen = etree.tostring(etree.fromstring(payload, xmlsafe._parser()), encoding="unicode")
    except etree.XMLSyntaxError as exc:
        seen = str(exc)
    assert SECRET not in seen


@pytest.mark.parametrize(
    "template",
    [
        '<!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/evil.dtd"><r/>',
        '<!DOCTYPE r PUBLIC "-//EVIL//DTD//EN" "http://127.0.0.1:{port}/evil.dtd"><r/>',
        '<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]><r/>',
        '<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/e.xml">]><r>&e;</r>',
    ],
)
def test_external_dtd_with_network_url_is_refused_without_connecting(
    listener: socket.socket, template: str
) -> None:
    payload = template.format(port=listener.getsockname()[1])
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload)
    assert caught.value.reason == "dtd"
    # The configured parser on its own must not fetch anything either.
    with contextlib.suppress(etree.XMLSyntaxError):
        etree.fromstring(payload.encode(), xmlsafe._parser())
    assert _nobody_connected(listener)


@pytest.mark.parametrize(
    "prolog",
    [
        "",
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        "\ufeff",
        "  \n<!-- a comment -->\n<?pi data?>\n",
    ],
)
def test_doctype_is_refused_whatever_comes_before_it(prolog: str) -> None:
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(prolog + "<!DOCTYPE r><r/>")
    assert caught.value.reason == "dtd"


def test_doctype_text_quoted_inside_cdata_is_accepted() -> None:
    root = parse_payload("<r><![CDATA[<!DOCTYPE html> is how pages start]]></r>")
    assert root.text == "<!DOCTYPE html> is how pages start"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_ten_megabyte_payload_is_refused_before_parsing(
    as_bytes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No clock here (speed is the benchmarks' business): the parser must never see it.
    def no_parsing(*args: object) -> None:
        raise AssertionError("a payload over the size limit reached the parser")

    monkeypatch.setattr(etree, "fromstring", no_parsing)
    body = "<r>" + "x" * (10 * 1024 * 1024) + "</r>"
    payload: str | bytes = body.encode() if as_bytes else body
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload)
    assert caught.value.reason == "too-large"
    assert "1048576" in str(caught.value)


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    payload = "<r>" + "é" * 600 + "</r>"  # 607 characters, 1207 bytes
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload, max_bytes=1000)
    assert caught.value.reason == "too-large"
    assert parse_payload(payload, max_bytes=2000).text == "é" * 600


def test_ten_thousand_deep_nesting_is_refused_without_recursion_error() -> None:
    payload = "<a>" * 10_000 + "</a>" * 10_000
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload)
    assert caught.value.reason == "too-deep"


def test_max_depth_is_enforced_below_libxml2_limit() -> None:
    payload = "<a><b><c><d><e/></d></c></b></a>"  # five levels
    assert parse_payload(payload, max_depth=5).tag == "a"
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload, max_depth=4)
    assert caught.value.reason == "too-deep"


def test_wide_shallow_payload_within_depth_is_accepted() -> None:
    payload = "<r>" + "<i><j/></i>" * 2000 + "</r>"
    assert len(parse_payload(payload, max_depth=3)) == 2000


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "   ",
        "not xml at all",
        "<entry>",
        "<a><b></a></b>",
        "<a/><b/>",
        "<a>&undefined;</a>",
        "<a attr='1' attr='2'/>",
        b"<a>\xff\xfe</a>",
        "<a>\ud800</a>",
        '<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"),
    ],
)
def test_malformed_payload_raises_payload_parse_error(payload: str | bytes) -> None:
    with pytest.raises(PayloadParseError) as caught:
        parse_payload(payload)
    assert caught.value.reason == "malformed"


def test_well_formed_payload_with_xml_declaration_parses_from_str() -> None:
    root = parse_payload("<?xml version='1.0' encoding='UTF-8'?><r xmlns='urn:x'>café</r>")
    assert root.tag == "{urn:x}r"
    assert root.text == "café"


def test_parser_is_safe_to_use_from_many_threads() -> None:
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for round_ in range(200):
                root = parse_payload(f"<r n='{index}'><v>{round_}</v></r>")
                assert root.get("n") == str(index)
                assert root[0].text == str(round_)
                with pytest.raises(PayloadParseError):
                    parse_payload("<broken")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


_FRAGMENTS = st.sampled_from(
    [
        "<a>",
        "</a>",
        "<b/>",
        "<a x='1'>",
        "<!DOCTYPE a>",
        "<!DOCTYPE a [",
        "]>",
        "<!ENTITY e 'v'>",
        "&e;",
        "&amp;",
        "&#233;",
        "<![CDATA[",
        "]]>",
        "<?pi ",
        "?>",
        "<!--",
        "-->",
        "\ufeff",
        "x",
        " ",
        "\n",
        "é",
        "<",
        ">",
        "'",
        '"',
    ]
)
_XMLISH = st.lists(_FRAGMENTS, max_size=40).map("".join)


@settings(max_examples=300)
@given(st.one_of(_XMLISH, st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_either_parses_or_raises_payload_parse_error(
    payload: str | bytes,
) -> None:
    try:
        root = parse_payload(payload)
    except PayloadParseError:
        return
    assert isinstance(root.tag, str)
