"""The full-text indexes keep only what search reads (migration 0011, issue 12 point 7: disk).

SQLite's FTS5 table holds no token positions and no per-row sizes, and stays consistent with the
items as they come and go; an item's text is stored there only when its parsed JSON cannot give
it back (migration 0012, ``projector/search_text.py``). PostgreSQL's GIN index stays close to
the size of a fresh build as it grows item by item: its pending list is capped at 64 kB, where
the server's default 4 MB left that much merged-away space in every index, whatever its number
of items.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, atom, published, retracted
from pubsub_cache.events.db import is_sqlite
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations import api
from pubsub_cache.ops.bench.payloads import MICROBLOG_NODE, publish_events
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, default_registry
from pubsub_cache.projector.parsers import TEXT_KEYS, MicroblogParser, ParsedPayload
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.projector.search_text import (
    derived_text,
    derived_text_sql,
    is_derived,
    pubsub_item_text,
)
from pubsub_cache.projector.xmlsafe import parse_payload
from pubsub_cache.query import BlockingQuery


def project(engine: Engine, registry: AnalyserRegistry | None = None) -> None:
    projector = Projector(engine, registry=registry or default_registry(), batch_size=500)
    projector.catch_up()
    projector.release()


BLOG = MICROBLOG_NODE


def test_sqlite_full_text_keeps_no_positions_and_stays_consistent(
    engine: Engine, event_log: EventLog
) -> None:
    if not is_sqlite(engine):
        pytest.skip("SQLite only: FTS5")
    event_log.append(publish_events(60, service=SERVICE))
    project(engine)
    event_log.append([retracted(*(f"post-{i}" for i in range(0, 60, 3)), node=MICROBLOG_NODE)])
    project(engine)

    with engine.connect() as connection:

        def matches(query: str) -> int:
            sql = "SELECT count(*) FROM pubsub_item_fts WHERE pubsub_item_fts MATCH :query"
            return int(connection.execute(sa.text(sql), {"query": query}).scalar_one())

        # Words in the text column, narrowed by node: what query/search.py asks.
        node_id = connection.exec_driver_sql("SELECT id FROM pubsub_node").scalar_one()
        assert matches(f'node_id : ({node_id}) AND text : ("pubsub" "corpus")') == 40
        assert matches('text : ("number" "7")') == 1
        assert matches('text : ("number" "6")') == 0  # retracted
        # The index and the items agree, after the retractions' deletes too.
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('integrity-check')"
        )
        # No positions: a phrase cannot be answered. No per-row sizes: no docsize table.
        with pytest.raises(sa.exc.OperationalError, match="detail"):
            matches('"pubsub cache"')
        tables = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE name LIKE 'pubsub_item_fts%'"
        ).scalars()
        assert "pubsub_item_fts_docsize" not in set(tables)


def test_postgresql_gin_index_stays_near_a_fresh_build_as_items_come(
    engine: Engine, event_log: EventLog
) -> None:
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: a GIN index")
    for start in range(0, 3_000, 500):
        event_log.append(publish_events(500, service=SERVICE, start=start))
        project(engine)

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:

        def index_bytes() -> int:
            connection.exec_driver_sql("VACUUM pubsub_item")
            sql = "SELECT pg_relation_size('ix_pubsub_item_search')"
            return int(connection.exec_driver_sql(sql).scalar_one())

        grown = index_bytes()
        connection.exec_driver_sql("REINDEX INDEX ix_pubsub_item_search")
        fresh = index_bytes()
    # At the default 4 MB pending list: 2.5 MB here, for 0.4 MB built fresh.
    assert grown <= 1.5 * fresh, (grown, fresh)


class Said(MicroblogParser):
    """Texts that are not the JSON's strings: a fixed word, or none at all."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self._text = text

    def parse(self, element: object) -> ParsedPayload:
        parsed = super().parse(element)  # type: ignore[arg-type]
        return ParsedPayload(data=parsed.data, text=self._text, published=parsed.published)


def said_registry() -> AnalyserRegistry:
    registry = default_registry()
    for name, text in (("zebra", "zebra"), ("mute", "")):
        registry.register(
            Analyser(
                name=name,
                priority=1000,
                node_prefix=f"{name}:",
                to_sync=True,
                parser=Said(name, text),
            )
        )
    return registry


def stored_texts(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    """Each item's (text column, searchable text), by node."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(pubsub_node.c.node, pubsub_item.c.text, pubsub_item_text.c.text)
            .join(pubsub_node, pubsub_node.c.id == pubsub_item.c.node_id)
            .join(pubsub_item_text, pubsub_item_text.c.id == pubsub_item.c.id)
        ).all()
    return {node: (column, searched) for node, column, searched in rows}


def test_a_text_the_json_gives_back_is_stored_only_on_postgresql(
    engine: Engine, event_log: EventLog
) -> None:
    entry = (
        "<entry xmlns='http://www.w3.org/2005/Atom'><title>Quiet title</title>"
        "<content>Hello body</content><category term='tagged'/></entry>"
    )
    event_log.append(
        [published("1", node=node, payload=entry) for node in (BLOG, "zebra:b", "mute:b")]
    )
    project(engine, said_registry())

    texts = stored_texts(engine)
    parsed = MicroblogParser().parse(parse_payload(entry)).text
    assert sorted(texts[BLOG][1].split("\n")) == sorted(parsed.split("\n"))  # type: ignore[union-attr]
    assert texts[BLOG][0] == (None if is_sqlite(engine) else parsed)
    # Texts that are not the JSON's strings are stored as they are, the empty one included.
    assert texts["zebra:b"] == ("zebra", "zebra")
    assert texts["mute:b"] == (("", "") if is_sqlite(engine) else (None, None))
    with BlockingQuery.open(engine) as query:

        def found(text: str) -> list[str]:
            hits = query.search(ACCOUNT, text=text, limit=10).hits
            return sorted(hit.node for hit in hits)

        assert found("quiet hello tagged") == [BLOG]
        assert found("zebra") == ["zebra:b"]
    if is_sqlite(engine):
        with engine.connect() as connection:
            connection.exec_driver_sql(
                "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('integrity-check')"
            )


def test_the_text_follows_an_item_through_change_and_retraction(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("1", node=BLOG, payload=atom("First words"))])
    project(engine)
    event_log.append([published("1", node=BLOG, payload=atom("Second thoughts"))])
    event_log.append([published("2", node=BLOG, payload=atom("Other entry"))])
    project(engine)
    with BlockingQuery.open(engine) as query:
        assert query.search(ACCOUNT, text="first").total == 0
        assert query.search(ACCOUNT, text="second thoughts").total == 1
        event_log.append([retracted("1", node=BLOG)])
        project(engine)
        assert query.search(ACCOUNT, text="second").total == 0
        assert query.search(ACCOUNT, text="other").total == 1
    if is_sqlite(engine):
        # The words the item was indexed with were given back at each change: FTS5 agrees.
        with engine.connect() as connection:
            connection.exec_driver_sql(
                "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('integrity-check')"
            )
            # Contentless, FTS5 keeps what a delete gave back wrong: each word is looked up.
            for word, count in (("first", 0), ("second", 0), ("thoughts", 0), ("other", 1)):
                found = connection.exec_driver_sql(
                    f"SELECT count(*) FROM pubsub_item_fts WHERE pubsub_item_fts MATCH '{word}'"
                ).scalar_one()
                assert (word, found) == (word, count)


def test_the_derivation_is_the_same_in_python_sql_and_migration_0012() -> None:
    frozen: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0012_derived_search_text"
    )
    assert frozen.TEXT_KEYS == TEXT_KEYS
    assert frozen.derived("x.content_id") == derived_text_sql("x.content_id")
    data = {"title": "T", "tags": ["a", 3, "b"], "content": "c\nd", "author": {"name": "n"}}
    assert derived_text(data) == "T\na\nb\nc\nd"  # in the data's order
    assert is_derived("c\nd\nT\n\nb\na", data)
    assert not is_derived("T\nc\nd\na", data)  # a line short
    assert not is_derived("T c d a b", data)  # the same words, other lines
    # A value the stored JSON holds as a string that the data does not: never derived.
    assert not is_derived("T", {"title": "T", "tags": [datetime(2026, 1, 1, tzinfo=UTC)]})
    assert frozen._is_derived("b\na\nT\nc\nd", json.dumps(data))
    assert not frozen._is_derived("T", json.dumps(data))


def test_0012_leaves_out_the_texts_the_json_gives_back_and_puts_them_back(
    bare_engine: Engine,
) -> None:
    api.upgrade(bare_engine, "0011")
    rows = ReadModelRows(bare_engine)
    node = rows.node()
    derived = {"title": "Derived words", "tags": ["tagone"]}
    rows.item(node, "d", parsed=derived, text="Derived words\ntagone")
    rows.item(node, "k", parsed={"title": "Kept"}, text="other words")
    rows.item(node, "e", parsed={"title": "Hidden"})  # a parser's empty text: NULL at 0011
    rows.item(node, "n")  # nothing parsed
    sqlite = is_sqlite(bare_engine)

    def texts() -> dict[str, str | None]:
        with bare_engine.connect() as connection:
            found = connection.exec_driver_sql("SELECT item_id, text FROM pubsub_item").all()
        return dict(found)

    def check_full_text() -> None:
        if sqlite:
            with bare_engine.connect() as connection:
                connection.exec_driver_sql(
                    "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('integrity-check')"
                )

    api.upgrade(bare_engine)
    if sqlite:
        assert texts() == {"d": None, "k": "other words", "e": "", "n": None}
    else:
        assert texts() == {"d": "Derived words\ntagone", "k": "other words", "e": None, "n": None}
    check_full_text()
    with BlockingQuery.open(bare_engine) as query:

        def found(text: str) -> list[str]:
            return sorted(hit.item.id for hit in query.search(ACCOUNT, text=text).hits)

        assert found("derived tagone") == ["d"]
        assert found("other") == ["k"]
        assert found("kept") == found("hidden") == []  # their JSON's words: not their text

    api.downgrade(bare_engine, "0011")
    assert texts() == {"d": "Derived words\ntagone", "k": "other words", "e": None, "n": None}
    check_full_text()


def test_a_rebuild_indexes_the_text_of_the_rebuilt_items(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published(f"p{n}", node=BLOG, payload=atom(f"post {n}")) for n in range(5)])
    project(engine)
    with engine.begin() as connection:  # a live model that lost its items: the rebuild has them
        connection.execute(pubsub_item.delete())
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    assert rebuild.finish(swap=True, verify=False).swapped
    rebuild.clean_up()

    with BlockingQuery.open(engine) as query:
        assert query.search(ACCOUNT, text="post").total == 5
    with engine.connect() as connection:  # the view reads the tables now in place
        count = connection.execute(sa.select(sa.func.count()).select_from(pubsub_item_text))
        assert count.scalar_one() == 5
