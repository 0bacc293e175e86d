"""Naming a node as a Libervia user does (``-s``/``-n``, the account's own PEP by default, an
``xmpp:`` URI, short options) while today's ``get SERVICE NODE --max-items N`` keeps working."""

from __future__ import annotations

import json

import click
import pytest
from query_helpers import ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE
from pubsub_cache.ops.cli import main
from pubsub_cache.ops.cli_target import Target, parse_xmpp_uri, resolve


@pytest.mark.parametrize(
    ("words", "options", "expected"),
    [
        (["pubsub.example", "blog"], {}, Target("pubsub.example", "blog")),
        (["blog"], {}, Target(ACCOUNT, "blog")),
        ([], {"service": "pubsub.example", "node": "blog"}, Target("pubsub.example", "blog")),
        (["pubsub.example"], {"node": "blog"}, Target("pubsub.example", "blog")),
        (
            ["xmpp:pubsub.example?;node=urn%3Axmpp%3Amicroblog%3A0;item=a%20b"],
            {},
            Target("pubsub.example", "urn:xmpp:microblog:0", "a b"),
        ),
        (
            ["xmpp:juliet@capulet.lit?pubsub;action=subscribe;node=blog"],
            {},
            Target("juliet@capulet.lit", "blog"),
        ),
    ],
)
def test_a_node_is_named_by_words_options_or_an_xmpp_uri(
    words: list[str], options: dict[str, str], expected: Target
) -> None:
    given = {"service": None, "node": None} | options
    assert resolve(words, service=given["service"], node=given["node"], own=ACCOUNT) == expected


@pytest.mark.parametrize(
    ("words", "problem"),
    [([], "which node?"), (["a", "b", "c"], "unexpected argument 'a'")],
)
def test_a_node_named_wrongly_is_bad_usage(words: list[str], problem: str) -> None:
    with pytest.raises(click.UsageError, match=problem):
        resolve(words, service=None, node=None, own=ACCOUNT)


def test_an_xmpp_uri_without_a_jid_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="no JID"):
        parse_xmpp_uri("xmpp:?;node=blog")


def test_get_reads_the_accounts_pep_by_default_and_takes_uris_and_short_options(
    database_url: str,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = ReadModelRows(engine)
    rows.items(rows.node(NODE), ["s1", "s2", "s3"])
    rows.items(rows.node("urn:xmpp:microblog:0", service=ACCOUNT), ["p1", "p2"])
    monkeypatch.setenv("PUBSUB_CACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PUBSUB_CACHE_JID", ACCOUNT)

    def ids(*argv: str) -> list[str]:
        capsys.readouterr()
        assert main([*argv, "--cache-only", "--json"]) == 0, capsys.readouterr().out
        return [item["id"] for item in json.loads(capsys.readouterr().out)["items"]]

    assert ids("get", SERVICE, NODE, "--max-items", "2") == ["s2", "s3"]  # today's form
    assert ids("get", "-s", SERVICE, "-n", NODE, "-m", "2") == ["s2", "s3"]
    assert ids("get", "urn:xmpp:microblog:0") == ["p1", "p2"]  # the account's own PEP
    assert ids("get", f"xmpp:{SERVICE}?;node={NODE};item=s1") == ["s1"]
    assert ids("get", SERVICE, NODE, "-M", "1", "-a", "s1") == ["s2"]
    assert ids("get", SERVICE, NODE, "-M", "1", "-b", "") == ["s3"]
    assert ids("get", SERVICE, NODE, "-i", "s1", "-i", "s3") == ["s1", "s3"]
