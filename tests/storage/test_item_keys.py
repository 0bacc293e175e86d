"""``pubsub_item_key`` follows ``pubsub_item`` through every write the projector makes, and a
database from before migrations 0007 (PostgreSQL's statement-level key triggers), 0008 (its
full text from an expression index) and 0009 (numbers for the accounts and keys of key rows)
upgrades in place with its items still searchable (issue 12, points 6 and 7); 0009 converts
its key rows back on a downgrade.

Key rows are counted here as stored, not joined to their items: a key left behind by a deleted
item is invisible to a join, and would be found by a search of another item with its id.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any

import sqlalchemy as sa
from query_helpers import ITEM_ROWS, KEY_NAMES, ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, atom, published, purged, retracted
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations import api
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import KEY_BYTES, item_key_select, pubsub_content
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
    current: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0010_content_addressed_payloads"
    )
    assert (current.PATHS, current.KEY_BYTES) == (SEARCHABLE_PATHS, KEY_BYTES)
    every = item_key_select("postgresql", SEARCHABLE_PATHS, trigger=False)
    assert current.select_from("pubsub_item") == every
    for dialect in ("sqlite", "postgresql"):
        for trigger in (False, True):
            frozen = current.select(dialect, trigger=trigger)
            assert frozen == item_key_select(dialect, SEARCHABLE_PATHS, trigger=trigger)
    # What 0009 froze, 0010's downgrade recreates.
    migration: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0009_narrow_item_keys"
    )
    assert (migration.PATHS, migration.KEY_BYTES) == (SEARCHABLE_PATHS, KEY_BYTES)
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
    rows = ReadModelRows(bare_engine)  # written in 0006's shape (the projector writes 0010's)
    node = rows.node(node=BLOG)
    for n in range(20):
        rows.item(node, f"p{n}", parsed={"title": f"old {n}"}, text=f"old {n}")
    api.upgrade(bare_engine)
    assert api.current_revision(bare_engine) == api.head_revision()
    with BlockingQuery.open(bare_engine) as query:
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "old 7")]).total == 1
        assert query.search(ACCOUNT, text="old", limit=100).total == 20
    # Written after the upgrade: the new triggers keep the keys.
    with bare_engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM pubsub_item WHERE item_id = 'p7'")
    rows.item(node, "p7", parsed={"title": "new 7"}, text="new 7")
    with BlockingQuery.open(bare_engine) as query:
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "old 7")]).total == 0
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "new 7")]).total == 1
    assert len(stored_keys(bare_engine)) == 20
    if bare_engine.dialect.name == "postgresql":
        assert _row_triggers(bare_engine) == []
        # Full text is indexed from an expression (0008), no longer stored in each row.
        columns = {c["name"] for c in sa.inspect(bare_engine).get_columns("pubsub_item")}
        assert "search_vector" not in columns


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


def _legacy_items(engine: Engine) -> list[tuple[Any, ...]]:
    """Every item as 0009's columns held it (parsed decoded)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT node_id, item_id, payload, parsed, parse_error, parser, parser_version, "
            "payload_hash, text FROM pubsub_item"
        ).all()
    return sorted(((*row[:3], _json(row[3]), *row[4:]) for row in rows), key=repr)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _all_keys(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT item_ref, account_id, key, value_num, value_text FROM pubsub_item_key"
        ).all()
    return sorted((tuple(row) for row in rows), key=repr)


def test_0010_moves_the_payloads_to_shared_contents_and_back(bare_engine: Engine) -> None:
    api.upgrade(bare_engine, "0009")
    rows = ReadModelRows(bare_engine)
    shared = atom("shared words")
    parsed = {"title": "Shared", "tags": ["x", "y"]}
    nodes = {account: rows.node(account=account) for account in (ACCOUNT, OTHER)}
    for node in nodes.values():  # two views of one public node: one content after 0010
        rows.item(node, "a", payload=shared, parsed=parsed, text="shared words")
    rows.item(nodes[ACCOUNT], "b", payload=atom("own"), parsed={"title": "Own"}, text="own")
    rows.item(nodes[OTHER], "n")  # to be notify-only (no payload)
    with bare_engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE pubsub_item SET payload = NULL, parsed = NULL WHERE item_id = 'n'"
        )
        for item_id, payload in connection.exec_driver_sql(
            "SELECT id, payload FROM pubsub_item WHERE payload IS NOT NULL"
        ).all():
            digest = hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
            connection.execute(
                sa.text(
                    "UPDATE pubsub_item SET parser = 'xep-0277', parser_version = 1, "
                    "payload_hash = :digest WHERE id = :id"
                ),
                {"digest": digest, "id": item_id},
            )
    before, keys = _legacy_items(bare_engine), _all_keys(bare_engine)
    assert len(keys) == 2 * 3 + 1

    api.upgrade(bare_engine)
    with bare_engine.connect() as connection:
        held = connection.execute(
            sa.select(
                ITEM_ROWS.c.node_id,
                ITEM_ROWS.c.item_id,
                ITEM_ROWS.c.payload,
                ITEM_ROWS.c.parsed,
                ITEM_ROWS.c.parse_error,
                ITEM_ROWS.c.parser,
                ITEM_ROWS.c.parser_version,
                ITEM_ROWS.c.digest,
                ITEM_ROWS.c.text,
            )
        ).all()
        contents = connection.execute(sa.select(pubsub_content.c.digest)).scalars().all()
    assert sorted(
        ((*row[:3], _json(row[3]), *row[4:7], row[8]) for row in held),
        key=repr,
    ) == [row[:7] + row[8:] for row in before]
    assert len(contents) == 2  # the shared payload once, the other once; none for "n"
    assert {bytes(row[7]) for row in held if row[7] is not None} == {bytes(d) for d in contents}
    assert bytes(contents[0]) in {
        content_digest(shared, "xep-0277", 1),
        content_digest(atom("own"), "xep-0277", 1),
    }
    assert _all_keys(bare_engine) == keys
    with BlockingQuery.open(bare_engine) as query:
        for account in (ACCOUNT, OTHER):
            assert query.search(account, filters=[Filter("tags", "contains", ["y"])]).total == 1
            assert query.search(account, text="shared").total == 1
        assert query.search(ACCOUNT, filters=[Filter("title", "eq", "Own")]).total == 1
    # The keys of an item written now come through its content.
    rows.item(nodes[OTHER], "c", payload=atom("new"), parsed={"title": "New"}, text="new")
    with BlockingQuery.open(bare_engine) as query:
        assert query.search(OTHER, filters=[Filter("title", "eq", "New")]).total == 1
        assert query.search(OTHER, text="new").total == 1

    api.downgrade(bare_engine, "0009")
    after = _legacy_items(bare_engine)
    new = [row for row in after if row[1] == "c"]
    assert [row for row in after if row[1] != "c"] == before
    assert new[0][2:4] == (atom("new"), {"title": "New"})
    assert len(_all_keys(bare_engine)) == len(keys) + 1
    # 0009's triggers keep the keys again.
    rows.item(nodes[ACCOUNT], "d", payload=atom("later"), parsed={"title": "Later"})
    assert len(_all_keys(bare_engine)) == len(keys) + 2
    # The full text still reads the items' text (SQLite: FTS5's external content).
    words = (
        "SELECT count(*) FROM pubsub_item_fts WHERE pubsub_item_fts MATCH 'shared'"
        if bare_engine.dialect.name == "sqlite"
        else "SELECT count(*) FROM pubsub_item "
        "WHERE to_tsvector('simple', coalesce(text, '')) @@ to_tsquery('simple', 'shared')"
    )
    with bare_engine.connect() as connection:
        assert connection.exec_driver_sql(words).scalar_one() == 2
