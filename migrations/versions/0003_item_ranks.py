"""Fidelity: each item's place in the service's order, and what the cache knows of a node's limit.

- ``pubsub_item.creation_rank`` / ``modification_rank`` / ``service_rank``: the orders the
  cache answers in (see ``projector/ranks.py``), each with an index that serves "the newest N"
  without a sort; they replace the indexes on ``created_position`` and ``updated_position``.
- ``pubsub_node.max_items``, ``notify_retract`` (from the node's configuration when the account
  may read it) and ``item_order`` (how the service lists items).

Existing rows get ranks from their positions (ties broken by row id, the order they had).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: projector/ranks.py RANK_SPAN (copied: revision scripts import nothing from the app).
SPAN = 1 << 24
RANKS = ("creation_rank", "modification_rank", "service_rank")


def upgrade() -> None:
    # Plain ALTER TABLE on both engines (SQLite >= 3.35 drops columns too): a batch copy of
    # pubsub_item would lose the full-text triggers 0002 created on it.
    op.add_column(
        "pubsub_node",
        sa.Column("max_items", sa.Integer(), comment="the node's pubsub#max_items, when known"),
    )
    op.add_column(
        "pubsub_node",
        sa.Column("notify_retract", sa.Boolean(), comment="pubsub#notify_retract, when known"),
    )
    op.add_column(
        "pubsub_node",
        sa.Column(
            "item_order", sa.String(16), comment="how the service lists items (ServiceOrder)"
        ),
    )
    comments = {
        "creation_rank": "place in the order of first publication (projector/ranks.py)",
        "modification_rank": "place in the order of last publication",
        "service_rank": "place in the service's own order (one of the two above)",
    }
    for name in RANKS:
        op.add_column(
            "pubsub_item",
            sa.Column(
                name, sa.BigInteger(), nullable=False, server_default="0", comment=comments[name]
            ),
        )
    op.execute(
        f"UPDATE pubsub_item SET creation_rank = created_position * {SPAN} + id % {SPAN}, "
        f"modification_rank = updated_position * {SPAN} + id % {SPAN}, "
        f"service_rank = created_position * {SPAN} + id % {SPAN}"
    )
    op.drop_index("ix_pubsub_item_node_created", table_name="pubsub_item")
    op.drop_index("ix_pubsub_item_node_updated", table_name="pubsub_item")
    for name in RANKS:
        short = name.removesuffix("_rank")
        op.create_index(f"ix_pubsub_item_node_{short}", "pubsub_item", ["node_id", name, "id"])


def downgrade() -> None:
    for name in RANKS:
        op.drop_index(f"ix_pubsub_item_node_{name.removesuffix('_rank')}", table_name="pubsub_item")
    op.create_index("ix_pubsub_item_node_created", "pubsub_item", ["node_id", "created_position"])
    op.create_index("ix_pubsub_item_node_updated", "pubsub_item", ["node_id", "updated_position"])
    for name in RANKS:
        op.drop_column("pubsub_item", name)
    for name in ("item_order", "notify_retract", "max_items"):
        op.drop_column("pubsub_node", name)
