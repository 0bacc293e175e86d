"""PostgreSQL full text from an expression index, not a stored column (issue 12, point 7).

``search_vector`` was a generated column kept in every ``pubsub_item`` row (~490 bytes an item
for an 800-byte Atom entry: the extracted text a second time, as lexemes with positions) only
to be indexed. The GIN index is now built on the same expression, so the lexemes live in the
index alone; search names the expression (``query/search.py``), which PostgreSQL matches to
the index. SQLite's FTS5 table already reads its text from ``pubsub_item`` (external content):
nothing changes there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: What query/search.py searches (frozen here: revision scripts import nothing from the app).
VECTOR = (
    "(to_tsvector('simple', coalesce(text, '')) || array_to_tsvector(ARRAY['~n' || node_id::text]))"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_pubsub_item_search")
    op.execute("ALTER TABLE pubsub_item DROP COLUMN IF EXISTS search_vector")
    op.execute(f"CREATE INDEX ix_pubsub_item_search ON pubsub_item USING gin ({VECTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_pubsub_item_search")
    op.execute(
        "ALTER TABLE pubsub_item ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        f"{VECTOR} STORED"
    )
    op.execute("CREATE INDEX ix_pubsub_item_search ON pubsub_item USING gin (search_vector)")
