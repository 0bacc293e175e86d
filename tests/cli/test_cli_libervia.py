"""What a Libervia user expects of the CLI, through the console script on both databases: a bare
``get`` prints a first page of 10 and says how many more; ``-O xml``; ``-k KEY``; repeatable
filters that OR; several sort keys; ``--account`` defaulting to the only configured account;
``--no-cache`` reading live with the account's own credentials from the accounts file."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
from query_helpers import FakeService, ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, atom
from pubsub_cache.events import Item
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.schema import pubsub_item
from pubsub_cache.query import BlockingQuery, InvalidQuery, NotCached, Query
from pubsub_cache.xmpp.client import PubsubClient
from tests_support import SCRIPT
from xmpp_fixtures import NewAccount


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script, as a user runs it (stdin is not a terminal)."""
    return subprocess.run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def environment(url: str, **settings: str) -> dict[str, str]:
    """Only our settings: the database and ``settings`` (``jid=...`` → PUBSUB_CACHE_JID)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_DATABASE_URL"] = url
    return env | {f"PUBSUB_CACHE_{name.upper()}": value for name, value in settings.items()}


def one_line(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The single error line of a failed command, with its status checked."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def accounts_file(path: Path, *jids: str) -> str:
    path.write_text("".join(f'[[account]]\njid = "{jid}"\npassword = "x"\n' for jid in jids))
    return str(path)


def test_a_bare_get_prints_a_first_page_of_ten_and_says_how_many_more(
    database_url: str, engine: Engine
) -> None:
    rows = ReadModelRows(engine)
    rows.items(rows.node(NODE), [f"i{n:02}" for n in range(25)])
    env = environment(database_url, jid=ACCOUNT)

    table = ok(run("get", SERVICE, NODE, "--cache-only", env=env))
    assert "i09" in table
    assert "i10" not in table
    assert "… and 15 more: -M/--max N or --all" in table
    everything = ok(run("get", SERVICE, NODE, "--cache-only", "--all", env=env))
    assert "i24" in everything
    assert "more" not in everything
    paged = ok(run("get", SERVICE, NODE, "--cache-only", "-M", "3", env=env))
    assert "i02" in paged
    assert "i03" not in paged
    assert "more" not in paged
    # Scripts keep working: JSON prints every item, in the same shape as before.
    document = json.loads(ok(run("get", SERVICE, NODE, "--cache-only", "--json", env=env)))
    assert len(document["items"]) == 25
    assert set(document) == {"items", "rsm", "complete", "from_cache", "sync_requested", "order"}
    assert json.loads(ok(run("get", SERVICE, NODE, "-O", "json", env=env))) == document

    error = one_line(run("get", SERVICE, NODE, "--all", "-M", "2", env=env))
    assert "--all goes alone" in error
    error = one_line(run("get", SERVICE, NODE, "--cache-only", "--no-cache", env=env))
    assert "exclude each other" in error
    disagree = run("get", SERVICE, NODE, "--json", "-O", "xml", env=env)
    assert disagree.returncode == 2
    assert "disagree" in json.loads(disagree.stdout)["error"]


def test_get_prints_the_items_xml_and_parsed_keys(database_url: str, engine: Engine) -> None:
    rows = ReadModelRows(engine)
    node = rows.node(NODE)
    rows.item(node, "a", payload=atom("First"), parsed={"title": "First", "author": {"name": "J"}})
    rows.item(node, "b")
    with engine.begin() as connection:  # notify-only: the service sent no payload
        connection.execute(
            pubsub_item.update().where(pubsub_item.c.item_id == "b").values(content_id=None)
        )
    env = environment(database_url, jid=ACCOUNT)

    xml = ok(run("get", SERVICE, NODE, "-O", "xml", env=env)).splitlines()
    assert xml[0] == f'<items node="{NODE}" service="{SERVICE}">'
    assert xml[1] == f'  <item id="a" publisher="juliet@capulet.lit">{atom("First")}</item>'
    assert xml[2] == '  <item id="b" publisher="juliet@capulet.lit"/>'
    assert xml[3:] == ["</items>"]

    keyed = json.loads(
        ok(run("get", SERVICE, NODE, "-k", "author.name", "-k", "title", "--json", env=env))
    )
    assert keyed["items"] == [
        {"id": "a", "author.name": "J", "title": "First"},
        {"id": "b", "author.name": None, "title": None},
    ]
    table = ok(run("get", SERVICE, NODE, "-k", "author.name", env=env))
    assert "author.name" in table
    assert "First" not in table
    assert ["a", "J"] in [line.split() for line in table.splitlines()]
    error = one_line(run("get", SERVICE, NODE, "-k", "bad path", env=env))
    assert "-k/--key" in error
    error = one_line(run("get", SERVICE, NODE, "-k", "title", "-O", "xml", env=env))
    assert "not XML" in error


def test_search_filters_repeated_keep_any_value_and_sorts_by_several_keys(
    database_url: str, engine: Engine
) -> None:
    rows = ReadModelRows(engine)
    blog = rows.node("blog", type="blog", subtype="personal")
    photos = rows.node("photos", type="gallery", subtype="shared")
    rows.node("avatar", type="avatar")
    rows.item(blog, "b1", parsed={"title": "beta"}, published=10)
    rows.item(blog, "b2", parsed={"title": "alpha"}, published=10)
    rows.item(photos, "p1", parsed={"title": "gamma"}, published=20)
    env = environment(database_url, jid=ACCOUNT)

    def ids(*argv: str) -> list[str]:
        document = json.loads(ok(run("search", *argv, "--json", env=env)))
        return [item["id"] for item in document["items"]]

    assert sorted(ids("--type", "blog")) == ["b1", "b2"]
    assert sorted(ids("--type", "blog", "--type", "gallery")) == ["b1", "b2", "p1"]
    assert sorted(ids("--subtype", "personal", "--subtype", "shared")) == ["b1", "b2", "p1"]
    assert sorted(ids("--node", "photos", "--node", "blog", "--type", "gallery")) == ["p1"]
    assert sorted(ids("-s", SERVICE, "-s", "elsewhere")) == ["b1", "b2", "p1"]
    assert ids("--sort", "-published", "--sort", "title") == ["p1", "b2", "b1"]
    assert ids("--sort", "published", "--sort", "-title") == ["b1", "b2", "p1"]
    assert ids("--order", "-publication", "--order", "title") == ["p1", "b2", "b1"]  # old name

    keyed = json.loads(ok(run("search", "--sort", "title", "-k", "title", "--json", env=env)))
    assert keyed["items"][0] == {"service": SERVICE, "node": "blog", "id": "b2", "title": "alpha"}
    assert "hits" not in keyed
    xml = ok(run("search", "--type", "gallery", "-O", "xml", env=env)).splitlines()
    assert xml[1].startswith('  <item id="p1" service="pubsub.capulet.lit" node="photos"')


def test_the_account_defaults_to_the_jid_then_the_only_account_of_the_accounts_file(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    rows = ReadModelRows(engine)
    rows.node("mine")
    rows.node("juliets", account="juliet@capulet.lit")
    one = accounts_file(tmp_path / "one.toml", ACCOUNT)
    two = accounts_file(tmp_path / "two.toml", ACCOUNT, "juliet@capulet.lit")

    def nodes(**settings: str) -> list[str]:
        env = environment(database_url, **settings)
        return [state["node"] for state in json.loads(ok(run("nodes", "--json", env=env)))]

    assert nodes(jid="juliet@capulet.lit") == ["juliets"]
    assert nodes(accounts_file=one) == ["mine"]
    assert nodes(accounts_file=two, jid="juliet@capulet.lit") == ["juliets"]
    env = environment(database_url, accounts_file=two)
    ambiguous = one_line(run("nodes", env=env))
    assert "which account? give --account (configured: romeo@montague.lit, juliet@capulet.lit)" in (
        ambiguous
    )
    json_error = json.loads(run("nodes", "--json", env=env).stdout)
    assert json_error["kind"] == "usage"
    assert json_error["status"] == 2
    assert [
        s["node"] for s in json.loads(ok(run("nodes", "--json", "--account", ACCOUNT, env=env)))
    ] == ["mine"]
    for command in (["get", "blog"], ["search"], ["purge", "--all"], ["reset", "--all"]):
        assert "which account?" in one_line(run(*command, env=env)), command
    assert "no account" in one_line(run("nodes", env=environment(database_url)))


@pytest.mark.anyio
async def test_no_cache_reads_live_with_the_accounts_own_credentials_from_the_accounts_file(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    node_name: str,
    database_url: str,
    engine: Engine,
    tmp_path: Path,
) -> None:
    account, service = new_account("cache"), prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "fresh", "<p xmlns='urn:test'>fresh</p>")
    rows = ReadModelRows(engine)  # the cache claims the node is synced, with an older item
    rows.item(rows.node(node_name, service=service, account=account.jid), "stale")
    path = tmp_path / "accounts.toml"
    path.write_text(
        f'[[account]]\njid = "{account.jid}"\npassword = "{account.password}"\n'
        f'xmpp_host = "{account.host}"\nxmpp_port = {account.port}\nxmpp_tls = "none"\n'
    )
    env = environment(database_url, accounts_file=str(path))

    def read(*argv: str) -> dict[str, object]:
        document: dict[str, object] = json.loads(
            ok(run("get", service, node_name, *argv, "--json", env=env))
        )
        return document

    cached = read()
    assert [item["id"] for item in cached["items"]] == ["stale"]  # type: ignore[attr-defined]
    assert cached["from_cache"] is True
    live = read("--no-cache")
    assert [item["id"] for item in live["items"]] == ["fresh"]  # type: ignore[attr-defined]
    assert live["from_cache"] is False

    # No password for the account asked for: one line, status 2, nothing read.
    other = environment(database_url, jid="nobody@localhost")
    error = one_line(run("get", service, node_name, "--no-cache", env=other))
    assert "--no-cache reads live, and nobody@localhost has no password configured" in error


@pytest.mark.anyio
async def test_the_query_library_reads_live_when_asked_even_for_a_synced_node(
    engine: Engine,
) -> None:
    rows = ReadModelRows(engine)
    rows.item(rows.node(NODE), "stale")
    fresh = Item(id="fresh", publisher=SERVICE, payload="<p xmlns='urn:test'>fresh</p>")
    async with Query.open(engine, client=FakeService(items=[fresh])) as query:
        cached = await query.get_items(ACCOUNT, SERVICE, NODE)
        live = await query.get_items(ACCOUNT, SERVICE, NODE, source="live")
        with pytest.raises(InvalidQuery, match="source is one of auto, live"):
            await query.get_items(ACCOUNT, SERVICE, NODE, source="cache")  # type: ignore[arg-type]
    assert ([item.id for item in cached.items], cached.from_cache) == (["stale"], True)
    assert ([item.id for item in live.items], live.from_cache) == (["fresh"], False)
    async with Query.open(engine) as query:  # no session to read live with
        with pytest.raises(NotCached, match="a live read was asked for"):
            await query.get_items(ACCOUNT, SERVICE, NODE, source="live")


def test_the_blocking_query_reads_live_when_asked_even_for_a_synced_node(engine: Engine) -> None:
    rows = ReadModelRows(engine)
    rows.item(rows.node(NODE), "stale")
    fresh = Item(id="fresh", publisher=SERVICE, payload="<p xmlns='urn:test'>fresh</p>")

    @asynccontextmanager
    async def connect() -> AsyncIterator[PubsubClient]:
        yield cast(PubsubClient, FakeService(items=[fresh]))

    with BlockingQuery.open(engine, connect=connect) as query:
        cached = query.get_items(ACCOUNT, SERVICE, NODE)
        live = query.get_items(ACCOUNT, SERVICE, NODE, source="live")
        with pytest.raises(InvalidQuery, match="source is one of auto, live"):
            query.get_items(ACCOUNT, SERVICE, NODE, source="cache")  # type: ignore[arg-type]
    assert ([item.id for item in cached.items], cached.from_cache) == (["stale"], True)
    assert ([item.id for item in live.items], live.from_cache) == (["fresh"], False)
