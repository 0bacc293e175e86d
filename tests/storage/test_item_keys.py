"""``pubsub_item_key`` follows ``pubsub_item`` through every write the projector makes, and a
database from before migrations 0007 (PostgreSQL's statement-level key triggers), 0008 (its
full text from an expression index) and 0009 (numbers for the accounts and keys of key rows)
upgrades in place with its items still searchable (issue 12, points 6 and 7); 0009 converts
its key rows back on a downgrade.

Key rows are counted here as stored, not joined to their items: a key left behind by a deleted
item is invisible to a join, and would be found by a search of another item with its id.
"""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from query_helpers import KEY_NAMES, ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, atom, published, purged, retracted
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations import api
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import KEY_BYTES, item_key_select
from pubsub_cache.query import BlockingQuery, Filter

BLOG = "urn:xmpp:microblog:0"
OTHER = "mercutio@verona.lit"


def stored_keys(engine: Engine) -> list[tuple[str, str]]:
    """Every key row (item id through its item_ref, key, value), orphans included (item NULL)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT i.item_id, k.key, k.value_text FROM pubsub_item_key AS k "
            "LEFT JOIN pubsub_item AS i ON i.id = k.item_ref"
        )
        return sorted(((row[0], f"{KEY_NAMES[row[1]]}={row[2]}") for row in rows), key=repr)


def project(engine: Engine) -> None:
    projector = Projector(engine, registry=default_registry())
    projector.catch_up()
    projector.release()


def test_the_statement_triggers_derive_the_keys_the_parsers_declare() -> None:
    migration: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0009_narrow_item_keys"
    )
    assert (migration.PATHS, migration.KEY_BYTES) == (SEARCHABLE_PATHS, KEY_BYTES)
    every = item_key_select("postgresql", SEARCHABLE_PATHS, trigger=False)
    assert migration.select_from("pubsub_item") == every
    # What 0007 froze, the downgrade's statement functions recreate.
    legacy: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0007_statement_key_triggers"
    )
    assert migration.select_from("new_items", legacy=True) == legacy.select_from("new_items")


def test_keys_follow_the_projectors_upserts_retractions_and_purges(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("a", node=BLOG, payload=atom("first")), published("b", node=BLOG)])
    project(engine)
    assert stored_keys(engine) == [("a", "title=first"), ("b", "title=hi")]
    # A changed payload is an upsert (INSERT ... ON CONFLICT DO UPDATE): the old key goes.
    event_log.append([published("a", node=BLOG, payload=atom("second"))])
    project(engine)
    assert stored_keys(engine) == [("a", "title=second"), ("b", "title=hi")]
    event_log.append([retracted("a", node=BLOG)])
    project(engine)
    assert stored_keys(engine) == [("b", "title=hi")]
    event_log.append([purged(node=BLOG)])
    project(engine)
    assert stored_keys(engine) == []


def test_keys_leave_with_a_deleted_node(engine: Engine, event_log: EventLog) -> None:
    event_log.append([published(f"i{n}", node=BLOG, payload=atom(f"t{n}")) for n in range(50)])
    project(engine)
    assert len(stored_keys(engine)) == 50
    with engine.begin() as connection:  # its items go by cascade, in one statement
        connection.exec_driver_sql("DELETE FROM pubsub_node")
    assert stored_keys(engine) == []


def test_a_database_before_0007_upgrades_in_place_and_stays_searchable(
    bare_engine: Engine,
) -> None:
    api.upgrade(bare_engine, "0006")
    log = EventLog(bare_engine)
    try:
        log.append([published(f"p{n}", node=BLOG, payload=atom(f"old {n}")) for n in range(20)])
        project(bare_engine)
        api.upgrade(bare_engine)
        assert api.current_revision(bare_engine) == api.head_revision()
        with BlockingQuery.open(bare_engine) as query:
            assert query.search(ACCOUNT, filters=[Filter("title", "eq", "old 7")]).total == 1
            assert query.search(ACCOUNT, text="old", limit=100).total == 20
        # Written after the upgrade: the new triggers keep the keys.
        log.append([published("p7", node=BLOG, payload=atom("new 7"))])
        project(bare_engine)
        with BlockingQuery.open(bare_engine) as query:
            assert query.search(ACCOUNT, filters=[Filter("title", "eq", "old 7")]).total == 0
            assert query.search(ACCOUNT, filters=[Filter("title", "eq", "new 7")]).total == 1
        assert len(stored_keys(bare_engine)) == 20
        if bare_engine.dialect.name == "postgresql":
            assert _row_triggers(bare_engine) == []
            # Full text is indexed from an expression (0008), no longer stored in each row.
            columns = {c["name"] for c in sa.inspect(bare_engine).get_columns("pubsub_item")}
            assert "search_vector" not in columns
    finally:
        log.close()


def _row_triggers(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT trigger_name FROM information_schema.triggers "
                    "WHERE event_object_table = 'pubsub_item' AND action_orientation = 'ROW' "
                    "AND trigger_name LIKE 'pubsub_item_key%' "
                    "AND event_object_schema = current_schema()"
                )
            ).scalars()
        )


def legacy_keys(engine: Engine, *, converted: bool) -> list[tuple[Any, ...]]:
    """Every key row as 0005's columns held it (item_ref, account, key name, text, number):
    read from those columns, or from this revision's (``converted``)."""
    sql = "SELECT k.item_ref, k.account, k.key, k.value_text, k.value_num FROM pubsub_item_key AS k"
    if converted:
        sql = (
            "SELECT k.item_ref, a.jid, k.key, k.value_text, k.value_num FROM pubsub_item_key AS k "
            "JOIN pubsub_account AS a ON a.id = k.account_id"
        )
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(sql).all()
    return sorted(
        (
            (
                row[0],
                row[1],
                KEY_NAMES[row[2]] if converted else row[2],
                row[3],
                None if row[4] is None else float(row[4]),
            )
            for row in rows
        ),
        key=repr,
    )


def test_a_database_before_0009_converts_its_keys_to_numbers_and_back(bare_engine: Engine) -> None:
    api.upgrade(bare_engine, "0008")
    rows = ReadModelRows(bare_engine)
    parsed = {
        "title": "Hello",
        "tags": ["x", 7, "y", 2.5],
        "author": {"name": "Juliet", "jid": "juliet@capulet.lit"},
        "artist": 3,
        "name": "a name",
    }
    nodes = {account: rows.node(account=account) for account in (ACCOUNT, OTHER)}
    for node in nodes.values():
        rows.item(node, "a", parsed=parsed)
        rows.item(node, "b", parsed={"title": 2, "tags": "solo"})
    before = legacy_keys(bare_engine, converted=False)
    assert len(before) == 2 * (9 + 2)

    api.upgrade(bare_engine)
    assert legacy_keys(bare_engine, converted=True) == before
    # The converted rows are the ones this revision's triggers derive.
    with bare_engine.begin() as connection:
        converted = connection.exec_driver_sql("SELECT * FROM pubsub_item_key").all()
        connection.exec_driver_sql("DELETE FROM pubsub_item_key")
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_key (item_ref, account_id, key, value_num, value_text) "
            + item_key_select(bare_engine.dialect.name, SEARCHABLE_PATHS, trigger=False)
        )
        derived = connection.exec_driver_sql("SELECT * FROM pubsub_item_key").all()
    assert sorted(derived, key=repr) == sorted(converted, key=repr)
    with BlockingQuery.open(bare_engine) as query:
        assert query.search(ACCOUNT, filters=[Filter("tags", "contains", [7, "y"])]).total == 1
        assert query.search(OTHER, filters=[Filter("title", "eq", 2)]).total == 1

    api.downgrade(bare_engine, "0008")
    assert legacy_keys(bare_engine, converted=False) == before
    # 0005's triggers (0007's functions on PostgreSQL) keep the keys again.
    rows.item(nodes[OTHER], "c", parsed={"title": "C"})
    after = legacy_keys(bare_engine, converted=False)
    assert [row[1:] for row in after if row not in before] == [(OTHER, "title", "C", None)]
