"""The event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False, comment="Unix time of the append"),
        sa.Column(
            "body", sa.LargeBinary(), nullable=False, comment="msgpack of the event (events.codec)"
        ),
        sa.PrimaryKeyConstraint("position", name="pk_event"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("event")
