"""The read model: nodes, items (with full-text search), checkpoints, parked events, counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SYNC_STATES = ("NONE", "IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR")


def upgrade() -> None:
    op.create_table(
        "pubsub_node",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("analyser", sa.String(64)),
        sa.Column("type", sa.String(64)),
        sa.Column("subtype", sa.String(64)),
        sa.Column("to_sync", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("sync_state", sa.String(16), nullable=False, server_default="NONE"),
        sa.Column("sync_reason", sa.Text(), comment="why PARTIAL or ERROR"),
        sa.Column("sync_at", sa.Float(), comment="when sync_state last changed"),
        sa.Column("sync_id", sa.Text(), comment="the sync in progress or last finished"),
        sa.Column("sync_position", sa.BigInteger(), comment="log position of the SyncStarted"),
        sa.Column("sync_requested_position", sa.BigInteger(), comment="pending SyncRequested"),
        sa.Column("subscribed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("subscription", sa.String(16)),
        sa.Column("configuration", JSONType),
        sa.Column("item_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("redirect", sa.Text()),
        sa.Column("created_position", sa.BigInteger(), nullable=False),
        sa.Column("updated_position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(f"sync_state IN {SYNC_STATES!r}", name="ck_pubsub_node_sync_state"),
        sa.PrimaryKeyConstraint("id", name="pk_pubsub_node"),
        sa.UniqueConstraint(
            "account", "service", "node", name="uq_pubsub_node_account_service_node"
        ),
    )
    op.create_table(
        "pubsub_item",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("node_id", Id, nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("publisher", sa.Text()),
        sa.Column(
            "payload", sa.Text(), comment="raw XML of the payload element; NULL if notify-only"
        ),
        sa.Column("parsed", JSONType, comment="the parser's JSON; NULL if none or parse failed"),
        sa.Column("parse_error", sa.Text()),
        sa.Column("parser", sa.String(64)),
        sa.Column("parser_version", sa.Integer()),
        sa.Column(
            "text", sa.Text(), comment="plain text the parser extracted, for full-text search"
        ),
        sa.Column("payload_hash", sa.String(64)),
        sa.Column("published_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("created_position", sa.BigInteger(), nullable=False),
        sa.Column("updated_position", sa.BigInteger(), nullable=False),
        sa.Column("synced_by", sa.Text(), comment="sync_id of the last sync page holding the item"),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_node.id"],
            name="fk_pubsub_item_node_id_pubsub_node",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_pubsub_item"),
        sa.UniqueConstraint("node_id", "item_id", name="uq_pubsub_item_node_id_item_id"),
    )
    op.create_index("ix_pubsub_item_node_created", "pubsub_item", ["node_id", "created_position"])
    op.create_index("ix_pubsub_item_node_updated", "pubsub_item", ["node_id", "updated_position"])
    op.create_index("ix_pubsub_item_node_published", "pubsub_item", ["node_id", "published_at"])
    op.create_table(
        "projector_checkpoint",
        sa.Column("name", sa.String(128), nullable=False, comment="projector or partition"),
        sa.Column("position", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires", sa.Float()),
        sa.Column("updated_at", sa.Float()),
        sa.PrimaryKeyConstraint("name", name="pk_projector_checkpoint"),
    )
    op.create_table(
        "parked_event",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("projector", sa.String(128), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("parked_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_parked_event"),
        sa.UniqueConstraint("projector", "position", name="uq_parked_event_projector_position"),
    )
    op.create_index(
        "ix_parked_event_scope", "parked_event", ["projector", "account", "service", "node"]
    )
    op.create_table(
        "pubsub_counter",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("account", "name", name="pk_pubsub_counter"),
    )
    if op.get_bind().dialect.name == "sqlite":
        _create_sqlite_fts()
    else:
        op.execute(
            "ALTER TABLE pubsub_item ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('simple', coalesce(text, ''))) STORED"
        )
        op.execute("CREATE INDEX ix_pubsub_item_search ON pubsub_item USING gin (search_vector)")


def _create_sqlite_fts() -> None:
    # An external-content FTS5 index over pubsub_item.text, kept in step by triggers.
    op.execute(
        "CREATE VIRTUAL TABLE pubsub_item_fts USING fts5("
        "text, content='pubsub_item', content_rowid='id', tokenize='unicode61')"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_insert AFTER INSERT ON pubsub_item "
        "WHEN new.text IS NOT NULL BEGIN "
        "INSERT INTO pubsub_item_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_delete AFTER DELETE ON pubsub_item "
        "WHEN old.text IS NOT NULL BEGIN "
        "INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, text) "
        "VALUES ('delete', old.id, old.text); END"
    )
    op.execute(
        "CREATE TRIGGER pubsub_item_fts_update AFTER UPDATE OF text ON pubsub_item BEGIN "
        "INSERT INTO pubsub_item_fts(pubsub_item_fts, rowid, text) "
        "SELECT 'delete', old.id, old.text WHERE old.text IS NOT NULL; "
        "INSERT INTO pubsub_item_fts(rowid, text) "
        "SELECT new.id, new.text WHERE new.text IS NOT NULL; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS pubsub_item_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS pubsub_item_fts")
    op.drop_table("pubsub_counter")
    op.drop_index("ix_parked_event_scope", table_name="parked_event")
    op.drop_table("parked_event")
    op.drop_table("projector_checkpoint")
    op.drop_table("pubsub_item")
    op.drop_table("pubsub_node")
