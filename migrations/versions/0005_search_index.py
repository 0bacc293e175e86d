"""Search that does not grow with the read model (issue 12, point 2).

- ``pubsub_item_key`` (item_ref, account, key, value_text, value_num): one row per value of
  each searchable parsed path of an item, and one per scalar element of an array (key
  ``path[]``), kept by triggers on ``pubsub_item`` and filled here from the items there are.
  Indexed by (account, key, value): a field equality or a tag overlap reads its matches only.
- Full text narrowed by node inside the index: on SQLite the FTS5 table gets the item's
  ``node_id`` as a second indexed column (queried as ``node_id : (...) AND text : (...)``); on
  PostgreSQL the ``search_vector`` gets a lexeme ``~nNODE`` that no query word can produce.

The searchable paths and the row SELECT are frozen copies of ``projector/parsers``
SEARCHABLE_PATHS and ``projector/schema.py`` item_key_select (a test checks they agree).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PATHS = ("artist", "author.jid", "author.name", "name", "tags", "title")
KEY_BYTES = 2000
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = "item_ref, account, key, value_text, value_num"


def upgrade() -> None:
    op.create_table(
        "pubsub_item_key",
        sa.Column("item_ref", Id, nullable=False, comment="pubsub_item.id"),
        sa.Column("account", sa.Text(), nullable=False, comment="the item's node's account"),
        sa.Column("key", sa.Text(), nullable=False, comment="the path, with [] for array elements"),
        sa.Column("value_text", sa.Text(), comment="a string value"),
        sa.Column("value_num", sa.Numeric(), comment="a number value"),
    )
    op.create_index(
        "ix_pubsub_item_key_text",
        "pubsub_item_key",
        ["account", "key", "value_text", "item_ref"],
    )
    op.create_index(
        "ix_pubsub_item_key_number",
        "pubsub_item_key",
        ["account", "key", "value_num", "item_ref"],
        sqlite_where=sa.text("value_num IS NOT NULL"),
        postgresql_where=sa.text("value_num IS NOT NULL"),
    )
    op.create_index("ix_pubsub_item_key_item", "pubsub_item_key", ["item_ref"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_upgrade()
    else:
        _postgres_upgrade()
    dialect = op.get_bind().dialect.name
    op.execute(f"INSERT INTO pubsub_item_key ({COLUMNS}) {select(dialect, trigger=False)}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_key_{name}")
        _sqlite_fts(scoped=False)
    else:
        op.execute("DROP TRIGGER IF EXISTS pubsub_item_key_sync ON pubsub_item")
        op.execute("DROP FUNCTION IF EXISTS pubsub_item_key_sync()")
        _postgres_vector(scoped=False)
    op.drop_table("pubsub_item_key")


def _sqlite_upgrade() -> None:
    new_rows = f"INSERT INTO pubsub_item_key ({COLUMNS}) {select('sqlite', trigger=True)};"
    op.execute(
        "CREATE TRIGGER pubsub_item_key_insert AFTER INSERT ON pubsub_item "
        f"WHEN new.parsed IS NOT NULL BEGIN {new_rows} END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_update AFTER UPDATE OF parsed ON pubsub_item BEGIN "
        f"DELETE FROM pubsub_item_key WHERE item_ref = old.id; {new_rows} END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_delete AFTER DELETE ON pubsub_item BEGIN "
        "DELETE FROM pubsub_item_key WHERE item_ref = old.id; END"
    )
    _sqlite_fts(scoped=True)


def _sqlite_fts(*, scoped: bool) -> None:
    # External content over pubsub_item (text, and node_id when scoped): a row for every item
    # when scoped, so that the triggers and FTS5's 'rebuild' (projector/rebuild.py) agree.
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_fts_{name}")
    op.execute("DROP TABLE IF EXISTS pubsub_item_fts")
    columns = "text, node_id" if scoped else "text"
    new, old = (
        ("new.text, new.node_id", "old.text, old.node_id") if scoped else ("new.text", "old.text")
    )
    when_new = "" if scoped else "WHEN new.text IS NOT NULL "
    when_old = "" if scoped else "WHEN old.text IS NOT NULL "
    where_new = "" if scoped else " WHERE new.text IS NOT NULL"
    where_old = "" if scoped else " WHERE old.text IS NOT NULL"
    op.execute(
        f"CREATE VIRTUAL TABLE pubsub_item_fts USING fts5({columns}, content='pubsub_item', "
        "content_rowid='id', tokenize='unicode61')"
    )
    op.execute(
        f"CREATE TRIGGER pubsub_item_fts_insert AFTER INSERT ON pubsub_item {when_new}BEGIN "
        f"INSERT INTO pubsub_item_fts(rowid, {columns}) VALUES (new.id, {new}); END"
    )
    op.execute(
        f"CREATE TRIGGER pubsub_item_fts_delete AFTER DELETE ON pubsub_item {when_old}BEGIN "
        f"INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, {columns}) "
        f"VALUES ('delete', old.id, {old}); END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_update AFTER UPDATE OF text ON pubsub_item BEGIN "
        f"INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, {columns}) "
        f"SELECT 'delete', old.id, {old}{where_old}; "
        f"INSERT INTO pubsub_item_fts(rowid, {columns}) SELECT new.id, {new}{where_new}; END"
    )
    op.execute("INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('rebuild')")


def _postgres_upgrade() -> None:
    op.execute(
        "CREATE FUNCTION pubsub_item_key_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP <> 'INSERT' THEN "
        "DELETE FROM pubsub_item_key WHERE item_ref = OLD.id; END IF; "
        "IF TG_OP <> 'DELETE' THEN "
        f"INSERT INTO pubsub_item_key ({COLUMNS}) {select('postgresql', trigger=True)}; "
        "END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_sync AFTER INSERT OR DELETE OR UPDATE OF parsed "
        "ON pubsub_item FOR EACH ROW EXECUTE FUNCTION pubsub_item_key_sync()"
    )
    _postgres_vector(scoped=True)


def _postgres_vector(*, scoped: bool) -> None:
    node = " || array_to_tsvector(ARRAY['~n' || node_id::text])" if scoped else ""
    op.execute("ALTER TABLE pubsub_item DROP COLUMN search_vector")
    op.execute(
        "ALTER TABLE pubsub_item ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        f"(to_tsvector('simple', coalesce(text, '')){node}) STORED"
    )
    op.execute("CREATE INDEX ix_pubsub_item_search ON pubsub_item USING gin (search_vector)")


def select(dialect: str, *, trigger: bool, paths: tuple[str, ...] = PATHS) -> str:
    """projector/schema.py item_key_select, as it was at this revision."""
    if any(
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*", p) for p in paths
    ):
        raise ValueError(f"searchable paths are dotted keys, got {paths!r}")
    row = "new" if trigger else "i"
    if trigger:
        source, where = "pubsub_node AS n", "n.id = new.node_id AND new.parsed IS NOT NULL"
    else:
        source = "pubsub_item AS i JOIN pubsub_node AS n ON n.id = i.node_id"
        where = "i.parsed IS NOT NULL"
    if dialect == "sqlite":
        table = " UNION ALL ".join(f"SELECT '{p}' AS key, '$.{p}' AS path" for p in paths)
        kind = f"json_type({row}.parsed, p.path)"
        value = f"json_extract({row}.parsed, p.path)"

        def fits(text: str) -> str:
            return f"length(CAST(n.account AS BLOB)) + length(CAST({text} AS BLOB)) <= {KEY_BYTES}"

        scalars = (
            f"SELECT {row}.id, n.account, p.key, CASE WHEN {kind} = 'text' THEN {value} END, "
            f"CASE WHEN {kind} IN ('integer', 'real') THEN {value} END "
            f"FROM {source}, ({table}) AS p WHERE {where} "
            f"AND ({kind} IN ('integer', 'real') OR ({kind} = 'text' AND {fits(value)}))"
        )
        elements = (
            f"SELECT {row}.id, n.account, p.key || '[]', "
            "CASE WHEN e.type = 'text' THEN e.value END, "
            "CASE WHEN e.type IN ('integer', 'real') THEN e.value END "
            f"FROM {source}, ({table}) AS p, json_each({row}.parsed, p.path) AS e "
            f"WHERE {where} AND {kind} = 'array' "
            f"AND (e.type IN ('integer', 'real') OR (e.type = 'text' AND {fits('e.value')}))"
        )
        return f"{scalars} UNION ALL {elements}"
    table = ", ".join(f"('{p}', '{{{p.replace('.', ',')}}}'::text[])" for p in paths)
    found = f"{row}.parsed #> p.path"
    text = "k.value #>> '{}'"
    values = (
        f"SELECT p.key, {found} AS value FROM (VALUES {table}) AS p(key, path) "
        f"UNION ALL SELECT p.key || '[]', e.value FROM (VALUES {table}) AS p(key, path), "
        f"jsonb_array_elements(CASE WHEN jsonb_typeof({found}) = 'array' THEN {found} "
        "ELSE '[]'::jsonb END) AS e(value)"
    )
    return (
        f"SELECT {row}.id, n.account, k.key, "
        f"CASE WHEN jsonb_typeof(k.value) = 'string' THEN {text} END, "
        f"CASE WHEN jsonb_typeof(k.value) = 'number' THEN CAST({text} AS numeric) END "
        f"FROM {source}, LATERAL ({values}) AS k WHERE {where} "
        "AND (jsonb_typeof(k.value) = 'number' OR (jsonb_typeof(k.value) = 'string' "
        f"AND octet_length(n.account) + octet_length({text}) <= {KEY_BYTES}))"
    )
