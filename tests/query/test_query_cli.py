"""``pubsub-cache get``, ``search``, ``nodes``, ``purge``, ``reset`` on both databases, and a live
``get`` against Prosody."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from query_helpers import ACCOUNT, NODE, SERVICE, ReadModelRows, sync_requests
from sqlalchemy.engine import Engine

from pubsub_cache.events import CachePurged, CacheReset
from pubsub_cache.events.log import EventLog
from pubsub_cache.ops.cli import main
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.query import BlockingQuery
from pubsub_cache.xmpp.client import PubsubClient

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(
    database_url: str,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``run("get", ...)``: the command line in this process, with the test database."""
    import os

    for name in list(os.environ):
        if name.startswith("PUBSUB_CACHE_") and not name.startswith("PUBSUB_CACHE_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PUBSUB_CACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PUBSUB_CACHE_JID", ACCOUNT)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


@pytest.fixture
def cached(engine: Engine) -> ReadModelRows:
    rows = ReadModelRows(engine)
    blog = rows.node(NODE, type="blog")
    for n in range(5):
        rows.item(
            blog, f"i{n}", parsed={"title": f"Title {n}", "rating": n}, text=f"word{n} common"
        )
    rows.node("unsynced", sync_state="NONE", to_sync=False)
    return rows


def test_get_prints_one_json_document_with_items_rsm_and_provenance(
    cached: ReadModelRows, run: Run
) -> None:
    status, out, err = run("get", SERVICE, NODE, "--max", "2", "--before", "", "--json")

    assert status == 0, err
    document = json.loads(out)
    assert [item["id"] for item in document["items"]] == ["i3", "i4"]
    assert set(document["items"][0]) == {
        "id",
        "publisher",
        "payload",
        "parsed",
        "parse_error",
        "published",
        "updated",
    }
    assert document["items"][0]["parsed"] == {"title": "Title 3", "rating": 3}
    assert document["rsm"] == {"first": "i3", "last": "i4", "index": 3, "count": 5}
    assert (document["complete"], document["from_cache"]) == (True, True)


def test_get_prints_a_table_by_default(cached: ReadModelRows, run: Run) -> None:
    status, out, _ = run("get", SERVICE, NODE, "--item", "i1", "--item", "i2", "--cache-only")

    assert status == 0
    assert "Title 1" in out
    assert "Title 2" in out
    assert "2 items from the cache" in out


def test_get_cache_only_on_an_unsynced_node_is_an_error(cached: ReadModelRows, run: Run) -> None:
    status, _, err = run("get", SERVICE, "unsynced", "--cache-only")

    assert status == 1
    assert "is not cached for romeo@montague.lit (sync state NONE)" in err


def test_get_needs_an_account(
    cached: ReadModelRows, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBSUB_CACHE_JID")

    status, _, err = run("get", SERVICE, NODE)

    assert status == 2
    assert "no account" in err


def test_search_takes_fields_text_and_type(cached: ReadModelRows, run: Run) -> None:
    status, out, err = run(
        "search", "--field", "rating", "ge", "3", "--text", "common", "--type", "blog", "--json"
    )

    assert status == 0, err
    document = json.loads(out)
    assert [hit["id"] for hit in document["hits"]] == ["i4", "i3"]
    assert document["total"] == 2
    status, out, _ = run("search", "--field", "title", "eq", "Title 1", "--order", "creation")
    assert status == 0
    assert "i1" in out
    assert "1 of 1 matching items" in out


def test_search_with_a_bad_path_says_so_in_one_line(cached: ReadModelRows, run: Run) -> None:
    status, _, err = run("search", "--field", "title'--", "eq", "x")

    assert status == 2  # bad usage
    assert (
        err.strip() == "pubsub-cache: invalid path \"title'--\": expected '.' or '[' at character 6"
    )


def test_nodes_lists_the_accounts_nodes(cached: ReadModelRows, run: Run) -> None:
    status, out, _ = run("nodes", "--json")
    table_status, table, _ = run("nodes")

    assert status == table_status == 0
    assert [(n["node"], n["sync_state"]) for n in json.loads(out)] == [
        (NODE, "COMPLETED"),
        ("unsynced", "NONE"),
    ]
    assert "2 nodes" in table


def test_purge_and_reset_are_recorded_as_events_the_projector_applies(
    cached: ReadModelRows, run: Run, engine: Engine
) -> None:
    log = EventLog(engine)
    assert run("purge")[0] == 2  # nothing said: refused

    status, out, _ = run("purge", "--node", NODE, "--older-than", "1d", "--force")
    assert status == 0
    assert "recorded CachePurged at log position" in out
    status, _, _ = run("reset", "--all", "--force")
    assert status == 0

    events = [record.event for record in log.read()]
    assert isinstance(events[0], CachePurged)
    assert (events[0].node, events[0].account) == (NODE, ACCOUNT)
    assert events[0].older_than is not None
    assert isinstance(events[1], CacheReset)
    Projector(engine, registry=default_registry()).catch_up()
    with BlockingQuery.open(engine) as query:
        assert query.nodes(ACCOUNT) == []
    log.close()


@pytest.mark.anyio
@pytest.mark.xmpp
async def test_get_reads_an_unsynced_node_live_with_the_configured_account(
    run: Run,
    engine: Engine,
    prosody: LocalProsody,
    publisher: PubsubClient,
    node_name: str,
    monkeypatch: pytest.MonkeyPatch,
    password: Callable[[str], str],
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    for n in range(3):
        await publisher.publish(service, node_name, f"live-{n}", f"<p xmlns='urn:test'>{n}</p>")
    settings: dict[str, Any] = {
        "PUBSUB_CACHE_JID": prosody.jid("reader"),
        "PUBSUB_CACHE_PASSWORD": password("reader"),
        "PUBSUB_CACHE_XMPP_HOST": prosody.host,
        "PUBSUB_CACHE_XMPP_PORT": str(prosody.port),
        "PUBSUB_CACHE_XMPP_TLS": "none",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)

    status, out, err = await anyio.to_thread.run_sync(
        lambda: run("get", service, node_name, "--max-items", "2", "--json")
    )
    cache_only = await anyio.to_thread.run_sync(
        lambda: run("get", service, node_name, "--cache-only")
    )

    assert status == 0, err
    document = json.loads(out)
    assert [item["id"] for item in document["items"]] == ["live-1", "live-2"]
    assert document["from_cache"] is False
    assert cache_only[0] == 1
    assert sync_requests(EventLog(engine)) == []
