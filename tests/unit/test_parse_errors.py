"""No silent parse failure (issue 10, point 5): whatever chose the parser, or when none could be
chosen because the payload could not be read, a payload that does not parse is stored raw with
its reason, shown by the query library and ``get --json``, and counted for ``status``.
On both databases."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, atom
from pubsub_cache.events import Event, Item, SyncCompleted, SyncPageFetched, SyncStarted
from pubsub_cache.events.log import EventLog
from pubsub_cache.ops.cli import main
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.payloads import parse_columns, parse_error_count, payload_namespace
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_node
from pubsub_cache.query import BlockingQuery

#: No analyser matches this node by name: the "atom" analyser matches Atom payloads anywhere.
NEWS = "news-feed"
ATOM_NS = "http://www.w3.org/2005/Atom"
MIB = 1 << 20


def huge_entry() -> str:
    """A well-formed Atom entry of about 1.5 MiB, over the parser's 1 MiB limit."""
    content = "x" * (3 * MIB // 2)
    return f"<entry xmlns='{ATOM_NS}'><title>big</title><content>{content}</content></entry>"


def synced(node: str, items: Sequence[Item], account: str = ACCOUNT) -> list[Event]:
    """A whole sync of ``node`` holding ``items``: the node ends COMPLETED, so reads are cached."""
    common: dict[str, Any] = {
        "account": account,
        "service": SERVICE,
        "node": node,
        "sync_id": f"s-{node}",
    }
    return [
        SyncStarted(observed_at=at(0), **common),
        SyncPageFetched(observed_at=at(1), items=list(items), **common),
        SyncCompleted(observed_at=at(2), complete=True, item_count=len(items), **common),
    ]


def project(engine: Engine, event_log: EventLog, events: Sequence[Event]) -> None:
    event_log.append(events)
    Projector(engine, registry=default_registry()).catch_up()


def stored(engine: Engine, node: str) -> dict[str, dict[str, object]]:
    query = (
        sa.select(ITEM_ROWS)
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(pubsub_node.c.node == node)
    )
    with engine.connect() as connection:
        return {row.item_id: dict(row._mapping) for row in connection.execute(query)}


def analyser_of(engine: Engine, node: str) -> str | None:
    with engine.connect() as connection:
        value: str | None = connection.execute(
            sa.select(pubsub_node.c.analyser).where(pubsub_node.c.node == node)
        ).scalar_one()
    return value


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PUBSUB_CACHE_") and not name.startswith("PUBSUB_CACHE_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PUBSUB_CACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PUBSUB_CACHE_JID", ACCOUNT)


def test_an_oversized_first_item_of_a_node_matched_by_namespace_records_why(
    engine: Engine,
    event_log: EventLog,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project(
        engine,
        event_log,
        synced(NEWS, [Item(id="big", payload=huge_entry()), Item(id="small", payload=atom("ok"))]),
    )

    assert analyser_of(engine, NEWS) == "atom"  # chosen from the oversized item's root
    rows = stored(engine, NEWS)
    assert rows["big"]["parsed"] is None
    assert "too-large" in str(rows["big"]["parse_error"])
    assert rows["big"]["payload"] == huge_entry()  # kept raw
    assert rows["small"]["parse_error"] is None
    assert rows["small"]["parsed"] is not None

    with BlockingQuery.open(str(engine.url.render_as_string(hide_password=False))) as cache:
        page = cache.get_items(ACCOUNT, SERVICE, NEWS)
    errors = {item.id: item.parse_error for item in page.items}
    assert errors["small"] is None
    assert "too-large" in str(errors["big"])

    capsys.readouterr()
    status = main(["get", SERVICE, NEWS, "--json", "--cache-only"])
    out, err = capsys.readouterr()
    assert status == 0, err
    shown = {item["id"]: item["parse_error"] for item in json.loads(out)["items"]}
    assert shown["small"] is None
    assert "too-large" in str(shown["big"])

    assert parse_error_count(engine, ACCOUNT) == 1
    assert parse_error_count(engine, "someone@else.lit") == 0
    with engine.connect() as connection:
        assert parse_error_count(connection) == 1

    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parse_errors"] == 1


def test_a_payload_no_analyser_could_read_gets_its_reason(
    engine: Engine, event_log: EventLog
) -> None:
    project(engine, event_log, synced("mystery", [Item(id="bad", payload="<unclosed xmlns='x'>")]))

    assert analyser_of(engine, "mystery") is None
    error = stored(engine, "mystery")["bad"]["parse_error"]
    assert "no parser could be chosen" in str(error)
    assert "malformed" in str(error)
    assert parse_error_count(engine, ACCOUNT) == 1


def test_a_well_formed_payload_of_a_node_without_parser_has_no_error(
    engine: Engine, event_log: EventLog
) -> None:
    project(engine, event_log, synced("other", [Item(id="1", payload="<x xmlns='urn:other'/>")]))

    assert stored(engine, "other")["1"]["parse_error"] is None
    assert parse_error_count(engine) == 0


def test_the_namespace_of_a_payload_too_large_to_parse_is_read_from_its_start_tag() -> None:
    assert payload_namespace(huge_entry()) == ATOM_NS
    prefixed = f"<a:entry xmlns:a='{ATOM_NS}'>{'y' * (3 * MIB // 2)}</a:entry>"
    assert payload_namespace(prefixed) == ATOM_NS
    # Nothing before the root is read: no DTD reaches libxml2, a prolog is not sniffed.
    assert payload_namespace("<!DOCTYPE x [<!ENTITY e 'e'>]>" + huge_entry()) is None
    assert payload_namespace("not xml at all" * 100_000) is None


def test_a_parser_raising_anything_records_it_instead_of_failing_the_batch() -> None:
    class Broken:
        name = "broken"
        version = 1
        namespace = "urn:x"

        def parse(self, element: object) -> object:
            raise KeyError("surprise")

    columns = parse_columns("<x xmlns='urn:x'/>", Broken())  # type: ignore[arg-type]
    assert columns.parsed is None
    assert "broken failed: KeyError" in str(columns.parse_error)
