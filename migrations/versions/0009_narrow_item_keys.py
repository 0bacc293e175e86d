"""Narrower search key rows (issue 12, point 7: disk).

Every ``pubsub_item_key`` row held the account's JID and the key's name as text, twice over
with its (account, key, value) index: on PostgreSQL 1,109 bytes an item for 5 key rows, on
SQLite 619 (``bench disk --quick``). Now:

- ``account_id``: the account's number in ``pubsub_account`` (id, jid), a dictionary that a
  trigger on ``pubsub_node`` inserts fills, so every writer of nodes keeps it (a row trigger:
  it fires for the nodes actually inserted, rarely). Filled here from the nodes there are.
- ``key``: a small integer, the path's place in the sorted searchable paths, twice, plus one
  for the elements of an array (``projector/schema.py`` key_code).
- the fixed-width columns first (item_ref, account_id, key), so PostgreSQL pads none of them.
- the (account, key, value) indexes no longer end on item_ref. Every entry was unique with it,
  so PostgreSQL's B-tree deduplication (13+) had nothing to merge; without it, the entries of
  one value (a tag, an author, on every item) share one key and a list of row pointers, and a
  search reads item_ref from the rows it finds (a bitmap heap scan, as fast for the few rows of
  a selective value). On PostgreSQL the key index of ``bench disk --quick`` went from 436 to
  133 bytes an item. SQLite keeps every entry (the rowid) and now reads the row for item_ref:
  a count over 5,000 matches took 5.2 ms instead of 3.4 ms.

``bench disk --quick``, key bytes an item: PostgreSQL 1,109 -> 524, SQLite 619 -> 341.

The rows are converted, not derived again: the same rows, renamed (downgrade converts back).
The key triggers are the same SELECT with the account joined through ``pubsub_account`` and
the codes in place of the names: on SQLite 0005's row triggers, on PostgreSQL 0007's
statement-level functions (replaced; their triggers stay). ``select`` below is
``projector/schema.py`` item_key_select frozen at this revision, and with ``legacy`` what 0005
and 0007 froze (for the downgrade); tests check both.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PATHS = ("artist", "author.jid", "author.name", "name", "tags", "title")
KEY_BYTES = 2000
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = "item_ref, account_id, key, value_num, value_text"
LEGACY_COLUMNS = "item_ref, account, key, value_text, value_num"
INDEXES = ("ix_pubsub_item_key_text", "ix_pubsub_item_key_number", "ix_pubsub_item_key_item")
# 0007's transition-table selections.
_CHANGED = (
    "(SELECT n.* FROM new_items AS n JOIN old_items AS o ON o.id = n.id "
    "WHERE o.parsed IS DISTINCT FROM n.parsed)"
)
_DROPPED = "(SELECT o.id FROM old_items AS o LEFT JOIN new_items AS n ON n.id = o.id " + (
    "WHERE n.id IS NULL OR o.parsed IS DISTINCT FROM n.parsed)"
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "pubsub_account",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("jid", sa.Text(), nullable=False, comment="pubsub_node.account"),
        sa.PrimaryKeyConstraint("id", name="pk_pubsub_account"),
        sa.UniqueConstraint("jid", name="uq_pubsub_account_jid"),
    )
    op.execute(
        "INSERT INTO pubsub_account (jid) SELECT DISTINCT account FROM pubsub_node ORDER BY 1"
    )
    if sqlite:
        op.execute(
            "CREATE TRIGGER pubsub_account_insert AFTER INSERT ON pubsub_node BEGIN "
            "INSERT OR IGNORE INTO pubsub_account (jid) VALUES (new.account); END"
        )
    else:
        op.execute(
            "CREATE FUNCTION pubsub_account_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO pubsub_account (jid) VALUES (NEW.account) "
            "ON CONFLICT (jid) DO NOTHING; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER pubsub_account_insert AFTER INSERT ON pubsub_node "
            "FOR EACH ROW EXECUTE FUNCTION pubsub_account_insert()"
        )
    _replace_table(legacy=False)
    # Every key a trigger wrote has a code (the paths are 0005's and 0007's).
    codes = " ".join(f"WHEN '{key}' THEN {code}" for key, code in _codes().items())
    op.execute(
        f"INSERT INTO pubsub_item_key ({COLUMNS}) SELECT k.item_ref, a.id, "
        f"CASE k.key {codes} END, k.value_num, k.value_text "
        "FROM old_pubsub_item_key AS k JOIN pubsub_account AS a ON a.jid = k.account"
    )
    op.drop_table("old_pubsub_item_key")
    _key_triggers(legacy=False)


def downgrade() -> None:
    _replace_table(legacy=True)
    names = " ".join(f"WHEN {code} THEN '{key}'" for key, code in _codes().items())
    op.execute(
        f"INSERT INTO pubsub_item_key ({LEGACY_COLUMNS}) SELECT k.item_ref, a.jid, "
        f"CASE k.key {names} END, k.value_text, k.value_num "
        "FROM old_pubsub_item_key AS k JOIN pubsub_account AS a ON a.id = k.account_id"
    )
    op.drop_table("old_pubsub_item_key")
    _key_triggers(legacy=True)
    op.execute("DROP TRIGGER IF EXISTS pubsub_account_insert" + _on("pubsub_node"))
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS pubsub_account_insert()")
    op.drop_table("pubsub_account")


def _codes() -> dict[str, int]:
    """Each key name and its code (projector/schema.py key_code)."""
    return {
        f"{path}{'[]' if element else ''}": 2 * number + element
        for number, path in enumerate(PATHS)
        for element in (0, 1)
    }


def _on(table: str) -> str:
    return f" ON {table}" if op.get_bind().dialect.name != "sqlite" else ""


def _replace_table(*, legacy: bool) -> None:
    """Move the key table aside (``old_pubsub_item_key``, its indexes dropped) and create it
    in the other shape, indexes included; the caller converts the rows."""
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_key_{name}")
    for name in INDEXES:
        op.drop_index(name, table_name="pubsub_item_key")
    op.rename_table("pubsub_item_key", "old_pubsub_item_key")
    item_ref = sa.Column("item_ref", Id, nullable=False, comment="pubsub_item.id")
    if legacy:
        op.create_table(
            "pubsub_item_key",
            item_ref,
            sa.Column("account", sa.Text(), nullable=False, comment="the item's node's account"),
            sa.Column(
                "key", sa.Text(), nullable=False, comment="the path, with [] for array elements"
            ),
            sa.Column("value_text", sa.Text(), comment="a string value"),
            sa.Column("value_num", sa.Numeric(), comment="a number value"),
        )
    else:
        op.create_table(
            "pubsub_item_key",
            item_ref,
            sa.Column("account_id", sa.Integer(), nullable=False, comment="pubsub_account.id"),
            sa.Column("key", sa.SmallInteger(), nullable=False, comment="the path's key_code"),
            sa.Column("value_num", sa.Numeric(), comment="a number value"),
            sa.Column("value_text", sa.Text(), comment="a string value"),
        )
    who = "account" if legacy else "account_id"
    # 0005's indexes end on item_ref; this revision's don't (see the module's docstring).
    last = ["item_ref"] if legacy else []
    op.create_index(INDEXES[0], "pubsub_item_key", [who, "key", "value_text", *last])
    op.create_index(
        INDEXES[1],
        "pubsub_item_key",
        [who, "key", "value_num", *last],
        sqlite_where=sa.text("value_num IS NOT NULL"),
        postgresql_where=sa.text("value_num IS NOT NULL"),
    )
    op.create_index(INDEXES[2], "pubsub_item_key", ["item_ref"])


def _key_triggers(*, legacy: bool) -> None:
    """0005's SQLite row triggers, or 0007's PostgreSQL statement functions, with the key
    SELECT of one shape or the other."""
    columns = LEGACY_COLUMNS if legacy else COLUMNS
    if op.get_bind().dialect.name == "sqlite":
        rows = select("sqlite", trigger=True, legacy=legacy)
        new_rows = f"INSERT INTO pubsub_item_key ({columns}) {rows};"
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
        return
    # The delete function names no column but item_ref: it stays.
    inserted = select_from("new_items", legacy=legacy)
    changed = select_from(_CHANGED, legacy=legacy)
    op.execute(
        "CREATE OR REPLACE FUNCTION pubsub_item_key_insert() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN INSERT INTO pubsub_item_key ({columns}) {inserted}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION pubsub_item_key_update() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN DELETE FROM pubsub_item_key WHERE item_ref = ANY(ARRAY{_DROPPED}); "
        f"INSERT INTO pubsub_item_key ({columns}) {changed}; RETURN NULL; END $$"
    )


def select_from(rows: str, *, legacy: bool = False) -> str:
    """PostgreSQL: the key rows of the items in ``rows`` (a table name or a parenthesised
    SELECT), as 0007's statement functions read them."""
    source = f"{rows} AS i JOIN pubsub_node AS n ON n.id = i.node_id"
    if not legacy:
        source += " JOIN pubsub_account AS a ON a.jid = n.account"
    return _select("postgresql", source, "i", "i.parsed IS NOT NULL", legacy=legacy)


def select(dialect: str, *, trigger: bool, legacy: bool = False) -> str:
    """projector/schema.py item_key_select at this revision (``legacy``: at 0005)."""
    row = "new" if trigger else "i"
    joined = "" if legacy else " JOIN pubsub_account AS a ON a.jid = n.account"
    if trigger:
        source, where = f"pubsub_node AS n{joined}", "n.id = new.node_id AND new.parsed IS NOT NULL"
    else:
        source = f"pubsub_item AS i JOIN pubsub_node AS n ON n.id = i.node_id{joined}"
        where = "i.parsed IS NOT NULL"
    return _select(dialect, source, row, where, legacy=legacy)


def _select(dialect: str, source: str, row: str, where: str, *, legacy: bool) -> str:
    if any(
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*", p) for p in PATHS
    ):
        raise ValueError(f"searchable paths are dotted keys, got {PATHS!r}")
    account = "n.account" if legacy else "a.id"
    codes = _codes()

    def key(path: str) -> str:
        return f"'{path}'" if legacy else str(codes[path])

    element = "p.key || '[]'" if legacy else "p.key + 1"

    def values(number: str, text: str) -> str:
        # 0005's rows held the text first; this revision's, the number (fixed width) first.
        return f"{text}, {number}" if legacy else f"{number}, {text}"

    if dialect == "sqlite":
        table = " UNION ALL ".join(f"SELECT {key(p)} AS key, '$.{p}' AS path" for p in PATHS)
        kind = f"json_type({row}.parsed, p.path)"
        value = f"json_extract({row}.parsed, p.path)"

        def fits(text: str) -> str:
            return f"length(CAST(n.account AS BLOB)) + length(CAST({text} AS BLOB)) <= {KEY_BYTES}"

        pair = values(
            f"CASE WHEN {kind} IN ('integer', 'real') THEN {value} END",
            f"CASE WHEN {kind} = 'text' THEN {value} END",
        )
        scalars = (
            f"SELECT {row}.id, {account}, p.key, {pair} "
            f"FROM {source}, ({table}) AS p WHERE {where} "
            f"AND ({kind} IN ('integer', 'real') OR ({kind} = 'text' AND {fits(value)}))"
        )
        pair = values(
            "CASE WHEN e.type IN ('integer', 'real') THEN e.value END",
            "CASE WHEN e.type = 'text' THEN e.value END",
        )
        elements = (
            f"SELECT {row}.id, {account}, {element}, {pair} "
            f"FROM {source}, ({table}) AS p, json_each({row}.parsed, p.path) AS e "
            f"WHERE {where} AND {kind} = 'array' "
            f"AND (e.type IN ('integer', 'real') OR (e.type = 'text' AND {fits('e.value')}))"
        )
        return f"{scalars} UNION ALL {elements}"
    table = ", ".join(f"({key(p)}, '{{{p.replace('.', ',')}}}'::text[])" for p in PATHS)
    found = f"{row}.parsed #> p.path"
    text = "k.value #>> '{}'"
    rows = (
        f"SELECT p.key, {found} AS value FROM (VALUES {table}) AS p(key, path) "
        f"UNION ALL SELECT {element}, e.value FROM (VALUES {table}) AS p(key, path), "
        f"jsonb_array_elements(CASE WHEN jsonb_typeof({found}) = 'array' THEN {found} "
        "ELSE '[]'::jsonb END) AS e(value)"
    )
    pair = values(
        f"CASE WHEN jsonb_typeof(k.value) = 'number' THEN CAST({text} AS numeric) END",
        f"CASE WHEN jsonb_typeof(k.value) = 'string' THEN {text} END",
    )
    return (
        f"SELECT {row}.id, {account}, k.key, {pair} "
        f"FROM {source}, LATERAL ({rows}) AS k WHERE {where} "
        "AND (jsonb_typeof(k.value) = 'number' OR (jsonb_typeof(k.value) = 'string' "
        f"AND octet_length(n.account) + octet_length({text}) <= {KEY_BYTES}))"
    )
