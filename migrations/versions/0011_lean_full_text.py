"""Full-text indexes that keep only what search reads (issue 12, point 7: disk).

PostgreSQL: the GIN index's pending list is capped at 64 kB (``gin_pending_list_limit``), not the
server's default 4 MB. New entries wait in that list until it is full and are then merged into
the index; the merged pages stay in the index as free space. At the default that was 4 MB per
index, whatever the number of items: 790 bytes an item at 5,000 items, 185 at 50,000, where a
freshly built index takes ~110 (``bench disk``). A 64 kB list is merged more often, in smaller
steps, and the index stays within ~20 % of a fresh build. Pages an existing index already holds
are not given back (that needs a REINDEX, which would hold writers off for the whole build);
they are free space it fills again as it grows.

SQLite: the FTS5 table keeps no token positions (``detail=column``) and no per-row token counts
(``columnsize=0``). Search matches words in a column (``text : ("a" "b")``) and the node's id
(``node_id : (...)``), never phrases or NEAR, and ranks by none of bm25's figures
(``query/search.py``): positions and counts were written for every item and never read. The
table is created again with the same triggers (0005's) and filled again by FTS5's 'rebuild',
which reads the text from ``pubsub_item`` (external content). A phrase search would need
``detail=full`` back: a migration like this one, in the other direction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: The GIN pending list's limit, in kB (PostgreSQL's least).
PENDING_LIST_KB = 64
#: The FTS5 options of each revision (0005's are FTS5's defaults).
LEAN = "detail=column, columnsize=0"
FULL = "detail=full, columnsize=1"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER INDEX ix_pubsub_item_search SET (gin_pending_list_limit = {PENDING_LIST_KB})"
        )
    else:
        _sqlite_fts(LEAN)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_pubsub_item_search RESET (gin_pending_list_limit)")
    else:
        _sqlite_fts(FULL)


def _sqlite_fts(options: str) -> None:
    """The FTS5 table and its triggers as 0005 made them (scoped by node), with ``options``."""
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_fts_{name}")
    op.execute("DROP TABLE IF EXISTS pubsub_item_fts")
    op.execute(
        "CREATE VIRTUAL TABLE pubsub_item_fts USING fts5(text, node_id, content='pubsub_item', "
        f"content_rowid='id', tokenize='unicode61', {options})"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_insert AFTER INSERT ON pubsub_item BEGIN "
        "INSERT INTO pubsub_item_fts(rowid, text, node_id) VALUES (new.id, new.text, new.node_id); "
        "END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_delete AFTER DELETE ON pubsub_item BEGIN "
        "INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, text, node_id) "
        "VALUES ('delete', old.id, old.text, old.node_id); END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_update AFTER UPDATE OF text ON pubsub_item BEGIN "
        "INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, text, node_id) "
        "SELECT 'delete', old.id, old.text, old.node_id; "
        "INSERT INTO pubsub_item_fts(rowid, text, node_id) SELECT new.id, new.text, new.node_id; "
        "END"
    )
    op.execute("INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('rebuild')")
