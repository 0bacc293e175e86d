"""Payloads stored once per distinct content (issue 13, point 6: fan-out).

Views are per account: a public node subscribed by N local accounts holds N ``pubsub_item`` rows
per item, and each held the same raw XML and the same parsed JSON (``bench fanout``: ~4 kB per
notification per view). Now ``pubsub_content`` holds, once per distinct (parser, parser version,
payload), the payload and what the parser derives from it alone (``parsed``, ``parse_error``),
named by a 16-byte blake2b ``digest`` of the three (length-prefixed: projector/payloads.py
content_digest, copied below as ``_digest``). ``pubsub_item`` points at it (``content_id``, NULL
for a notify-only item) and loses ``payload``, ``parsed``, ``parse_error``, ``parser``,
``parser_version`` and ``payload_hash``; ``text`` stays on the item, so that full-text search
stays narrowed by account and node inside its index (issue 12, point 2).

The key triggers read ``parsed`` through ``content_id``: on SQLite 0005's row triggers, now on
``UPDATE OF content_id``; on PostgreSQL 0007's statement functions, with the changed items those
whose ``content_id`` changed. ``select`` and ``select_from`` below are
``projector/schema.py`` item_key_select frozen at this revision (a test checks it); the
downgrade recreates 0009's (its module's own frozen copy).

The rows are converted, not parsed again: each item's digest is computed here, in Python (both
engines), the first item of each digest gives its content row. The downgrade copies the content
back into every item and computes the old ``payload_hash`` (blake2b of the payload alone).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib
import importlib
import re
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PATHS = ("artist", "author.jid", "author.name", "name", "tags", "title")
KEY_BYTES = 2000
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = "item_ref, account_id, key, value_num, value_text"
#: The item columns the content takes over (``text`` stays).
MOVED = ("payload", "parsed", "parse_error", "parser", "parser_version")
_CHANGED = (
    "(SELECT n.* FROM new_items AS n JOIN old_items AS o ON o.id = n.id "
    "WHERE o.content_id IS DISTINCT FROM n.content_id)"
)
_DROPPED = "(SELECT o.id FROM old_items AS o LEFT JOIN new_items AS n ON n.id = o.id " + (
    "WHERE n.id IS NULL OR o.content_id IS DISTINCT FROM n.content_id)"
)
_CHUNK = 2000
_SCRATCH = "migration_0010_digest"


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.create_table(
        "pubsub_content",
        sa.Column("id", Id, autoincrement=True),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("parser", sa.String(64)),
        sa.Column("parser_version", sa.Integer()),
        sa.Column("parse_error", sa.Text()),
        sa.Column("parsed", JSONType, comment="the parser's JSON; NULL if none or parse failed"),
        sa.Column("payload", sa.Text(), nullable=False, comment="raw XML of the payload element"),
        sa.PrimaryKeyConstraint("id", name="pk_pubsub_content"),
        sa.UniqueConstraint("digest", name="uq_pubsub_content_digest"),
    )
    op.add_column(
        "pubsub_item",
        sa.Column("content_id", Id, comment="pubsub_content.id; NULL if notify-only (no payload)"),
    )
    # The key triggers read parsed, which is going: SQLite's are dropped (created again below);
    # PostgreSQL's update trigger would derive every key again for the content_id fill.
    if sqlite:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_key_{name}")
    else:
        op.execute("ALTER TABLE pubsub_item DISABLE TRIGGER pubsub_item_key_update")
    _fill_contents(bind)
    if not sqlite:
        op.execute("ALTER TABLE pubsub_item ENABLE TRIGGER pubsub_item_key_update")
    op.create_index("ix_pubsub_item_content_id", "pubsub_item", ["content_id"])
    for name in (*MOVED, "payload_hash"):
        op.execute(f"ALTER TABLE pubsub_item DROP COLUMN {name}")
    _key_triggers()


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_key_{name}")
    op.add_column(
        "pubsub_item",
        sa.Column(
            "payload", sa.Text(), comment="raw XML of the payload element; NULL if notify-only"
        ),
    )
    op.add_column(
        "pubsub_item",
        sa.Column("parsed", JSONType, comment="the parser's JSON; NULL if none or parse failed"),
    )
    op.add_column("pubsub_item", sa.Column("parse_error", sa.Text()))
    op.add_column("pubsub_item", sa.Column("parser", sa.String(64)))
    op.add_column("pubsub_item", sa.Column("parser_version", sa.Integer()))
    op.add_column("pubsub_item", sa.Column("payload_hash", sa.String(64)))
    if not sqlite:
        op.execute("ALTER TABLE pubsub_item DISABLE TRIGGER pubsub_item_key_update")
    moved = ", ".join(f"{name} = c.{name}" for name in MOVED)
    op.execute(
        f"UPDATE pubsub_item SET {moved} FROM pubsub_content AS c "
        "WHERE c.id = pubsub_item.content_id"
    )
    mark = "?" if sqlite else "%s"
    last = 0
    while True:
        rows = bind.exec_driver_sql(
            f"SELECT id, payload FROM pubsub_content WHERE id > {mark} ORDER BY id LIMIT {_CHUNK}",
            (last,),
        ).all()
        if not rows:
            break
        bind.exec_driver_sql(
            f"UPDATE pubsub_item SET payload_hash = {mark} WHERE content_id = {mark}",
            [(_payload_hash(payload), content_id) for content_id, payload in rows],
        )
        last = rows[-1][0]
    if not sqlite:
        op.execute("ALTER TABLE pubsub_item ENABLE TRIGGER pubsub_item_key_update")
    op.drop_index("ix_pubsub_item_content_id", table_name="pubsub_item")
    op.execute("ALTER TABLE pubsub_item DROP COLUMN content_id")
    op.drop_table("pubsub_content")
    previous: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0009_narrow_item_keys"
    )
    previous._key_triggers(legacy=False)


def _fill_contents(bind: sa.Connection) -> None:
    """Every item's content: its digest computed here, one row per digest, its id set."""
    sqlite = bind.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    op.create_table(
        _SCRATCH,
        sa.Column("item_ref", Id, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
    )
    last = 0
    while True:
        rows = bind.exec_driver_sql(
            "SELECT id, parser, parser_version, payload FROM pubsub_item "
            f"WHERE payload IS NOT NULL AND id > {mark} ORDER BY id LIMIT {_CHUNK}",
            (last,),
        ).all()
        if not rows:
            break
        bind.exec_driver_sql(
            f"INSERT INTO {_SCRATCH} (item_ref, digest) VALUES ({mark}, {mark})",
            [(i, _digest(payload, parser, version)) for i, parser, version, payload in rows],
        )
        last = rows[-1][0]
    op.execute(
        f"INSERT INTO pubsub_content (digest, {', '.join(MOVED)}) "
        f"SELECT t.digest, {', '.join(f'i.{name}' for name in MOVED)} "
        f"FROM {_SCRATCH} AS t JOIN pubsub_item AS i ON i.id = t.item_ref "
        f"WHERE t.item_ref IN (SELECT min(item_ref) FROM {_SCRATCH} GROUP BY digest) "
        "ORDER BY t.item_ref"
    )
    op.execute(
        "UPDATE pubsub_item SET content_id = c.id "
        f"FROM {_SCRATCH} AS t JOIN pubsub_content AS c ON c.digest = t.digest "
        "WHERE t.item_ref = pubsub_item.id"
    )
    op.drop_table(_SCRATCH)


def _digest(payload: str, parser: str | None, parser_version: int | None) -> bytes:
    """projector/payloads.py content_digest at this revision."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (parser, None if parser_version is None else str(parser_version), payload):
        if part is None:
            digest.update(b"\xff" * 8)
            continue
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def _payload_hash(payload: str) -> str:
    """What 0009's items held in payload_hash: blake2b of the payload alone, in hex."""
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _codes() -> dict[str, int]:
    """Each path's code (projector/schema.py key_code, elements one more)."""
    return {path: 2 * number for number, path in enumerate(PATHS)}


def _key_triggers() -> None:
    """0005's SQLite row triggers, or 0007's PostgreSQL statement functions, reading the
    parsed JSON through the item's content."""
    if op.get_bind().dialect.name == "sqlite":
        new_rows = f"INSERT INTO pubsub_item_key ({COLUMNS}) {select('sqlite', trigger=True)};"
        op.execute(
            "CREATE TRIGGER pubsub_item_key_insert AFTER INSERT ON pubsub_item "
            f"WHEN new.content_id IS NOT NULL BEGIN {new_rows} END"
        )
        op.execute(
            "CREATE TRIGGER pubsub_item_key_update AFTER UPDATE OF content_id ON pubsub_item "
            f"BEGIN DELETE FROM pubsub_item_key WHERE item_ref = old.id; {new_rows} END"
        )
        op.execute(
            "CREATE TRIGGER pubsub_item_key_delete AFTER DELETE ON pubsub_item BEGIN "
            "DELETE FROM pubsub_item_key WHERE item_ref = old.id; END"
        )
        return
    # The delete function names no column but item_ref: it stays.
    inserted = select_from("new_items")
    changed = select_from(_CHANGED)
    op.execute(
        "CREATE OR REPLACE FUNCTION pubsub_item_key_insert() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN INSERT INTO pubsub_item_key ({COLUMNS}) {inserted}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION pubsub_item_key_update() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN DELETE FROM pubsub_item_key WHERE item_ref = ANY(ARRAY{_DROPPED}); "
        f"INSERT INTO pubsub_item_key ({COLUMNS}) {changed}; RETURN NULL; END $$"
    )


def select_from(rows: str) -> str:
    """PostgreSQL: the key rows of the items in ``rows`` (a table name or a parenthesised
    SELECT), as the statement functions read them."""
    source = (
        f"{rows} AS i JOIN pubsub_node AS n ON n.id = i.node_id "
        "JOIN pubsub_account AS a ON a.jid = n.account "
        "JOIN pubsub_content AS c ON c.id = i.content_id"
    )
    return _select("postgresql", source, "i", "c.parsed IS NOT NULL")


def select(dialect: str, *, trigger: bool) -> str:
    """projector/schema.py item_key_select at this revision."""
    if trigger:
        source = (
            "pubsub_node AS n JOIN pubsub_account AS a ON a.jid = n.account "
            "JOIN pubsub_content AS c ON c.id = new.content_id"
        )
        return _select(dialect, source, "new", "n.id = new.node_id AND c.parsed IS NOT NULL")
    source = (
        "pubsub_item AS i JOIN pubsub_node AS n ON n.id = i.node_id "
        "JOIN pubsub_account AS a ON a.jid = n.account "
        "JOIN pubsub_content AS c ON c.id = i.content_id"
    )
    return _select(dialect, source, "i", "c.parsed IS NOT NULL")


def _select(dialect: str, source: str, row: str, where: str) -> str:
    if any(
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*", p) for p in PATHS
    ):
        raise ValueError(f"searchable paths are dotted keys, got {PATHS!r}")
    codes = _codes()
    if dialect == "sqlite":
        table = " UNION ALL ".join(f"SELECT {codes[p]} AS key, '$.{p}' AS path" for p in PATHS)
        kind = "json_type(c.parsed, p.path)"
        value = "json_extract(c.parsed, p.path)"

        def fits(text: str) -> str:
            return f"length(CAST(n.account AS BLOB)) + length(CAST({text} AS BLOB)) <= {KEY_BYTES}"

        scalars = (
            f"SELECT {row}.id, a.id, p.key, CASE WHEN {kind} IN ('integer', 'real') THEN {value} "
            f"END, CASE WHEN {kind} = 'text' THEN {value} END "
            f"FROM {source}, ({table}) AS p WHERE {where} "
            f"AND ({kind} IN ('integer', 'real') OR ({kind} = 'text' AND {fits(value)}))"
        )
        elements = (
            f"SELECT {row}.id, a.id, p.key + 1, "
            "CASE WHEN e.type IN ('integer', 'real') THEN e.value END, "
            "CASE WHEN e.type = 'text' THEN e.value END "
            f"FROM {source}, ({table}) AS p, json_each(c.parsed, p.path) AS e "
            f"WHERE {where} AND {kind} = 'array' "
            f"AND (e.type IN ('integer', 'real') OR (e.type = 'text' AND {fits('e.value')}))"
        )
        return f"{scalars} UNION ALL {elements}"
    table = ", ".join(f"({codes[p]}, '{{{p.replace('.', ',')}}}'::text[])" for p in PATHS)
    found = "c.parsed #> p.path"
    text = "k.value #>> '{}'"
    values = (
        f"SELECT p.key, {found} AS value FROM (VALUES {table}) AS p(key, path) "
        f"UNION ALL SELECT p.key + 1, e.value FROM (VALUES {table}) AS p(key, path), "
        f"jsonb_array_elements(CASE WHEN jsonb_typeof({found}) = 'array' THEN {found} "
        "ELSE '[]'::jsonb END) AS e(value)"
    )
    return (
        f"SELECT {row}.id, a.id, k.key, "
        f"CASE WHEN jsonb_typeof(k.value) = 'number' THEN CAST({text} AS numeric) END, "
        f"CASE WHEN jsonb_typeof(k.value) = 'string' THEN {text} END "
        f"FROM {source}, LATERAL ({values}) AS k WHERE {where} "
        "AND (jsonb_typeof(k.value) = 'number' OR (jsonb_typeof(k.value) = 'string' "
        f"AND octet_length(n.account) + octet_length({text}) <= {KEY_BYTES}))"
    )
