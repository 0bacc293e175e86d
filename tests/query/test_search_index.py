"""Search reads indexes, not every item (issue 12, point 2): parsed keys the parsers declare
searchable live in ``pubsub_item_key`` (kept by triggers, derived again by a rebuild), full text
is narrowed to the account's nodes inside the index; EXPLAIN shows each search kind on an index,
on both engines."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ACCOUNT, KEY_NAMES, ReadModelRows, content_row
from sqlalchemy.engine import Engine

from helpers import atom, published
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import (
    KEY_BYTES,
    item_key_select,
    pubsub_account,
    pubsub_content,
    pubsub_item,
    pubsub_item_key,
    pubsub_node,
)
from pubsub_cache.query import BlockingQuery, Filter

OTHER = "mercutio@verona.lit"
ITEMS = 3000


def keys(engine: Engine) -> list[tuple[Any, ...]]:
    """Every key row by natural keys (account, node, item id, key name), comparable across
    rebuilds."""
    k = pubsub_item_key.c
    query = (
        sa.select(
            pubsub_account.c.jid,
            pubsub_node.c.node,
            pubsub_item.c.item_id,
            k.key,
            k.value_text,
            sa.cast(k.value_num, sa.Float),
        )
        .join_from(pubsub_item_key, pubsub_item, pubsub_item.c.id == k.item_ref)
        .join(pubsub_node, pubsub_node.c.id == pubsub_item.c.node_id)
        .join(pubsub_account, pubsub_account.c.id == k.account_id)
    )
    with engine.connect() as connection:
        rows = [(*row[:3], KEY_NAMES[row[3]], *row[4:]) for row in connection.execute(query)]
    return sorted(rows, key=repr)


def test_the_migration_derives_the_keys_the_parsers_declare() -> None:
    current: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0010_content_addressed_payloads"
    )
    migration: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0009_narrow_item_keys"
    )
    assert current.PATHS == migration.PATHS == SEARCHABLE_PATHS
    assert current.KEY_BYTES == migration.KEY_BYTES == KEY_BYTES
    # What 0005 froze, the downgrade's triggers recreate.
    legacy: Any = importlib.import_module("pubsub_cache.migrations.versions.0005_search_index")
    for dialect in ("sqlite", "postgresql"):
        for trigger in (True, False):
            expected = item_key_select(dialect, SEARCHABLE_PATHS, trigger=trigger)
            assert current.select(dialect, trigger=trigger) == expected
            old = migration.select(dialect, trigger=trigger, legacy=True)
            assert old == legacy.select(dialect, trigger=trigger)


def test_keys_follow_an_item_through_insert_change_and_delete(engine: Engine) -> None:
    rows = ReadModelRows(engine)
    blog = rows.node("blog")
    parsed = {
        "title": "Hello",
        "tags": ["x", "y", 7, True, None, ["z"]],
        "author": {"name": "Juliet", "jid": None},
        "name": "n" * KEY_BYTES,  # too long for the index: searched without it
        "rating": 5,  # not declared
    }
    rows.item(blog, "a", parsed=parsed)
    assert keys(engine) == [
        (ACCOUNT, "blog", "a", "author.name", "Juliet", None),
        (ACCOUNT, "blog", "a", "tags[]", "x", None),
        (ACCOUNT, "blog", "a", "tags[]", "y", None),
        (ACCOUNT, "blog", "a", "tags[]", None, 7.0),
        (ACCOUNT, "blog", "a", "title", "Hello", None),
    ]
    with engine.begin() as connection:  # another content (contents never change)
        changed = content_row(
            connection, "<p xmlns='urn:test'>a2</p>", {"title": 2.5, "tags": "solo"}
        )
        connection.execute(
            pubsub_item.update().where(pubsub_item.c.item_id == "a").values(content_id=changed)
        )
    assert keys(engine) == [
        (ACCOUNT, "blog", "a", "tags", "solo", None),
        (ACCOUNT, "blog", "a", "title", None, 2.5),
    ]
    rows.item(blog, "b", parsed={"title": "B"})
    with engine.begin() as connection:
        connection.execute(pubsub_item.delete().where(pubsub_item.c.item_id == "a"))
    assert [row[2] for row in keys(engine)] == ["b"]
    with engine.begin() as connection:
        connection.execute(pubsub_node.delete())  # the items go by cascade, their keys too
    assert keys(engine) == []
    with BlockingQuery.open(engine) as query:
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "B")]).hits == []


def test_a_rebuild_derives_the_same_keys_and_full_text(engine: Engine, event_log: EventLog) -> None:
    event_log.append(
        [
            published(f"p{n}", node="urn:xmpp:microblog:0", payload=atom(f"post {n}"))
            for n in range(30)
        ]
    )
    Projector(engine, registry=default_registry()).catch_up()
    before = keys(engine)
    assert len(before) >= 30
    # Without the account numbers: the swap numbers the rebuilt nodes' accounts itself (on
    # SQLite it renames the shadow nodes into place, which no trigger sees).
    with engine.begin() as connection:
        connection.execute(pubsub_account.delete())
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    assert rebuild.finish(swap=True, verify=False).swapped
    rebuild.clean_up()
    assert keys(engine) == before
    with BlockingQuery.open(engine) as query:
        result = query.search(ACCOUNT, text="post", limit=100)
        assert result.total == 30
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "post 7")]).total == 1


@pytest.fixture
def filled(engine: Engine) -> Iterator[BlockingQuery]:
    """ITEMS items: one in a hundred in each of one account's two nodes, the rest in another
    account's node; ANALYZEd."""
    rows = ReadModelRows(engine)
    nodes = [rows.node("blog"), rows.node("news"), rows.node("blog", account=OTHER)]
    items = [
        {
            "node_id": nodes[min(n % 100, 2)],
            "item_id": f"i{n}",
            "content_id": n + 1,  # the contents below, one each
            # As long as a parser's extracted text (a row of a realistic size).
            "text": f"word{n} common words {'z' * 600}",
            "published_at": float(n),
            "created_at": 0.0,
            "updated_at": 0.0,
            "created_position": n,
            "updated_position": n,
        }
        for n in range(ITEMS)
    ]
    payload = f"<p xmlns='urn:t'>{'x' * 800}</p>"  # rows of a realistic size
    contents = [
        {
            "id": n + 1,
            "digest": content_digest(payload, "test", n),
            "parser": "test",
            "parser_version": n,
            "payload": payload,
            "parsed": {
                "title": f"title {n}",
                "tags": [f"tag{n % 100}", "common"],
                "author": {"name": f"author {n % 10}"},
                "content": "y" * 600,
            },
        }
        for n in range(ITEMS)
    ]
    with engine.begin() as connection:
        connection.execute(pubsub_content.insert(), contents)
        connection.execute(pubsub_item.insert(), items)
        connection.exec_driver_sql("ANALYZE")
    with BlockingQuery.open(engine) as query:
        yield query


SEARCHES: dict[str, dict[str, Any]] = {
    "eq": {"filters": [Filter("title", "eq", "title 300")]},
    "in": {"filters": [Filter("author.name", "in", ["author 1", "nobody"])]},
    "overlap": {"filters": [Filter("tags", "overlap", ["tag0", "tag1", "tag2"])]},
    "contains": {"filters": [Filter("tags", "contains", ["tag0", "common"])]},
    "rare word": {"text": "word300"},
    "common word": {"text": "common", "node": "news"},
}
EXPECTED = {"eq": 1, "in": 30, "overlap": 60, "contains": 30, "rare word": 1, "common word": 30}


@pytest.mark.parametrize("kind", list(SEARCHES))
def test_each_search_kind_reads_an_index(engine: Engine, filled: BlockingQuery, kind: str) -> None:
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "pubsub_item" in statement and "count(" in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        result = filled.search(ACCOUNT, **SEARCHES[kind])
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert result.total == EXPECTED[kind]
    [(statement, parameters)] = statements
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            plan = " | ".join(
                row[-1]
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
            assert not re.search(r"SCAN pubsub_(item|node)\b(?!_)", plan), plan
            index = (
                "pubsub_item_fts VIRTUAL TABLE"
                if "text" in SEARCHES[kind]
                else "ix_pubsub_item_key"
            )
            assert index in plan, plan
            return
        text = connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement}", parameters
        ).scalar_one()
    plan = (json.loads(text) if isinstance(text, str) else text)[0]["Plan"]
    nodes = list(_walk(plan))
    scanned = {node.get("Relation Name") for node in nodes if node["Node Type"] == "Seq Scan"}
    assert not scanned & {"pubsub_item", "pubsub_item_key"}, _summary(plan)
    index = "ix_pubsub_item_search" if "text" in SEARCHES[kind] else "ix_pubsub_item_key_text"
    assert any(node.get("Index Name") == index for node in nodes), _summary(plan)


def _summary(plan: dict[str, Any]) -> str:
    return " | ".join(
        f"{node['Node Type']} {node.get('Relation Name', '')} {node.get('Index Name', '')}"
        for node in _walk(plan)
    )


def _walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _walk(child)
