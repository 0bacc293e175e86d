"""PostgreSQL keeps ``pubsub_item_key`` with statement-level triggers (issue 12, point 6).

Migration 0005's trigger ran a PL/pgSQL function for every row written to ``pubsub_item``,
which halved the upsert rate (3.6k rows/s against 8k without it, 500-row batches). Statement
triggers with transition tables derive the keys of all the rows a statement wrote in one
INSERT ... SELECT, and remove the keys of every row it deleted or whose ``parsed`` changed
with one DELETE (4.4k-4.9k rows/s, measured the same way; the projector still writes with
executemany, one statement per row, and gains it all the same). Every writer of
``pubsub_item`` still keeps the keys (the projector, a rebuild's copy, a test), as before.

An UPDATE trigger with transition tables cannot be limited to a column (``UPDATE OF parsed``),
so it fires on every update and picks the rows whose ``parsed`` changed itself. Deletions read
``pubsub_item_key`` by ``item_ref = ANY(ARRAY(...))``: an index scan whatever the planner
guesses of a transition table's size (it has no statistics on one).

SQLite has row triggers only; nothing changes there.

The key SELECT is 0005's (``select``, frozen there) run over a transition table instead of
``pubsub_item``; a test checks that the two agree.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PATHS = ("artist", "author.jid", "author.name", "name", "tags", "title")
KEY_BYTES = 2000
COLUMNS = "item_ref, account, key, value_text, value_num"
_CHANGED = (
    "(SELECT n.* FROM new_items AS n JOIN old_items AS o ON o.id = n.id "
    "WHERE o.parsed IS DISTINCT FROM n.parsed)"
)
_DROPPED = "(SELECT o.id FROM old_items AS o LEFT JOIN new_items AS n ON n.id = o.id " + (
    "WHERE n.id IS NULL OR o.parsed IS DISTINCT FROM n.parsed)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS pubsub_item_key_sync ON pubsub_item")
    op.execute("DROP FUNCTION IF EXISTS pubsub_item_key_sync()")
    inserted = select_from("new_items")
    changed = select_from(_CHANGED)
    op.execute(
        "CREATE FUNCTION pubsub_item_key_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO pubsub_item_key ({COLUMNS}) {inserted}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION pubsub_item_key_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"DELETE FROM pubsub_item_key WHERE item_ref = ANY(ARRAY{_DROPPED}); "
        f"INSERT INTO pubsub_item_key ({COLUMNS}) {changed}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION pubsub_item_key_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM pubsub_item_key WHERE item_ref = ANY(ARRAY(SELECT id FROM old_items)); "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_insert AFTER INSERT ON pubsub_item "
        "REFERENCING NEW TABLE AS new_items "
        "FOR EACH STATEMENT EXECUTE FUNCTION pubsub_item_key_insert()"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_update AFTER UPDATE ON pubsub_item "
        "REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items "
        "FOR EACH STATEMENT EXECUTE FUNCTION pubsub_item_key_update()"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_delete AFTER DELETE ON pubsub_item "
        "REFERENCING OLD TABLE AS old_items "
        "FOR EACH STATEMENT EXECUTE FUNCTION pubsub_item_key_delete()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_key_{name} ON pubsub_item")
        op.execute(f"DROP FUNCTION IF EXISTS pubsub_item_key_{name}()")
    row = select_row()
    op.execute(
        "CREATE FUNCTION pubsub_item_key_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP <> 'INSERT' THEN "
        "DELETE FROM pubsub_item_key WHERE item_ref = OLD.id; END IF; "
        "IF TG_OP <> 'DELETE' THEN "
        f"INSERT INTO pubsub_item_key ({COLUMNS}) {row}; "
        "END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_key_sync AFTER INSERT OR DELETE OR UPDATE OF parsed "
        "ON pubsub_item FOR EACH ROW EXECUTE FUNCTION pubsub_item_key_sync()"
    )


def select_from(rows: str) -> str:
    """The key rows of the items in ``rows`` (a table name or a parenthesised SELECT)."""
    source = f"{rows} AS i JOIN pubsub_node AS n ON n.id = i.node_id"
    return _select(source, "i", "i.parsed IS NOT NULL")


def select_row() -> str:
    """The key rows of the item a row trigger fires for (0005's trigger, for the downgrade)."""
    return _select("pubsub_node AS n", "new", "n.id = new.node_id AND new.parsed IS NOT NULL")


def _select(source: str, row: str, where: str) -> str:
    # 0005's PostgreSQL SELECT (projector/schema.py item_key_select), frozen at this revision.
    table = ", ".join(f"('{p}', '{{{p.replace('.', ',')}}}'::text[])" for p in PATHS)
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
