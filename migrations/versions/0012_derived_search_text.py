"""SQLite stores an item's searchable text only when its parsed JSON cannot give it back
(issue 12, point 7: what is stored twice).

A built-in parser's text is strings of its own JSON data (a microblog entry's title, content and
tags): ``pubsub_item.text`` held them a second time, ~350 bytes an item of ~3,100
(``bench disk``). ``projector/search_text.py`` tells when: the text's lines are the strings the
JSON holds under ``TEXT_KEYS`` (copied below). Those items' ``text`` becomes NULL; every other
parsed item keeps its text, the empty string included, so that NULL always means "derived".

The view ``pubsub_item_text`` (id, text, node_id) gives each item's text: its column, else the
text derived from its content's JSON (``derived``, below: projector/search_text.py
derived_text_sql at this revision; a test checks both agree). The FTS5 table is now contentless
(``content=''``): it was external content over ``pubsub_item``, whose column no longer holds
every text, and FTS5 cannot read a view that calls ``json_each`` (it prepares its reads of the
content with virtual tables forbidden: "SQL logic error"). Search reads only its rowids. Its
triggers index the view's expression, and it is filled from the view (below, and a replay's
swap: projector/rebuild.py); a content never changes and outlives the items that reference it,
so an item's deletion gives FTS5 the words it was indexed with. The other FTS5 options are
0011's.

PostgreSQL keeps the text (its GIN index is on an expression of the item row alone); the view
is made there too, over the column, so that readers ask one place on both engines.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from typing import Any

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TEXT_KEYS = (
    "area", "artist", "building", "content", "country", "description", "floor", "locality",
    "name", "postalcode", "region", "room", "source", "street", "tags", "text", "title",
)  # fmt: skip
VIEW = "pubsub_item_text"
_CHUNK = 2000


def derived(content_id: str) -> str:
    """The text the content ``content_id`` gives back (projector/search_text.py)."""
    keys = ", ".join(f"'{key}'" for key in TEXT_KEYS)
    return (
        "(SELECT group_concat(coalesce(a.value, t.value), char(10)) "
        "FROM pubsub_content AS c, json_each(c.parsed) AS t "
        "LEFT JOIN json_each(CASE WHEN t.type = 'array' THEN t.value END) AS a "
        f"WHERE c.id = {content_id} AND t.key IN ({keys}) "
        "AND (t.type = 'text' OR a.type = 'text'))"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE VIEW {VIEW} AS SELECT id, text, node_id FROM pubsub_item")
        return
    _drop_fts()
    op.execute(
        f"CREATE VIEW {VIEW} AS SELECT i.id AS id, "
        f"coalesce(i.text, {derived('i.content_id')}) AS text, i.node_id AS node_id "
        "FROM pubsub_item AS i"
    )
    _convert()
    new, old = (f"coalesce({row}.text, {derived(f'{row}.content_id')})" for row in ("new", "old"))
    # Contentless: what an insert added, a delete gives back (the same derivation, from the
    # content, which never changes).
    add = f"INSERT INTO pubsub_item_fts(rowid, text, node_id) VALUES (new.id, {new}, new.node_id); "
    remove = (
        "INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, text, node_id) "
        f"VALUES ('delete', old.id, {old}, old.node_id); "
    )
    op.execute(
        "CREATE VIRTUAL TABLE pubsub_item_fts USING fts5(text, node_id, content='', "
        "tokenize='unicode61', detail=column, columnsize=0)"
    )
    op.execute(f"CREATE TRIGGER pubsub_item_fts_insert AFTER INSERT ON pubsub_item BEGIN {add}END")
    op.execute(
        f"CREATE TRIGGER pubsub_item_fts_delete AFTER DELETE ON pubsub_item BEGIN {remove}END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_update AFTER UPDATE OF text, content_id ON pubsub_item "
        f"BEGIN {remove}{add}END"
    )
    op.execute(f"INSERT INTO pubsub_item_fts(rowid, text, node_id) SELECT * FROM {VIEW}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP VIEW IF EXISTS {VIEW}")
        return
    _drop_fts()
    # Every text back in its column; 0011 stored none empty (NULL: no text).
    op.execute(
        f"UPDATE pubsub_item SET text = {derived('pubsub_item.content_id')} WHERE text IS NULL"
    )
    op.execute("UPDATE pubsub_item SET text = NULL WHERE text = ''")
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    previous: Any = importlib.import_module("pubsub_cache.migrations.versions.0011_lean_full_text")
    previous._sqlite_fts(previous.LEAN)


def _drop_fts() -> None:
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_fts_{name}")
    op.execute("DROP TABLE IF EXISTS pubsub_item_fts")


def _convert() -> None:
    """Each parsed item's text NULL when its JSON gives it back, else kept ('' when none)."""
    connection = op.get_bind()
    mark = 0
    while True:
        rows = connection.exec_driver_sql(
            "SELECT i.id, i.text, c.parsed FROM pubsub_item AS i "
            "JOIN pubsub_content AS c ON c.id = i.content_id "
            f"WHERE c.parsed IS NOT NULL AND i.id > {mark} ORDER BY i.id LIMIT {_CHUNK}"
        ).all()
        if not rows:
            return
        mark = rows[-1][0]
        changes = [
            {"id": item_ref, "text": None if _is_derived(text or "", parsed) else text or ""}
            for item_ref, text, parsed in rows
        ]
        connection.exec_driver_sql("UPDATE pubsub_item SET text = :text WHERE id = :id", changes)


def _is_derived(text: str, parsed: str) -> bool:
    """projector/search_text.py is_derived at this revision, on the stored JSON."""
    data = json.loads(parsed)
    found: list[str] = []
    for key, value in data.items() if isinstance(data, dict) else ():
        if key not in TEXT_KEYS:
            continue
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found.extend(element for element in value if isinstance(element, str))
    return _lines(text) == _lines("\n".join(found))


def _lines(text: str) -> Counter[str]:
    return Counter(line for line in text.split("\n") if line)
