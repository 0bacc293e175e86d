"""Each account a daemon serves and its state: ``ingest_account`` (issue 13), see
``xmpp/accounts.py``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_account",
        sa.Column("account", sa.Text(), nullable=False, comment="the bare JID served"),
        sa.Column(
            "owner", sa.Text(), nullable=False, comment="the process serving it (ingest_lease)"
        ),
        sa.Column(
            "state",
            sa.Text(),
            nullable=False,
            comment="connecting, connected, standing-by, failed or stopped",
        ),
        sa.Column("reason", sa.Text(), comment="why: the failure, the lease's holder"),
        sa.Column("since", sa.Float(), nullable=False, comment="Unix time it entered the state"),
        sa.PrimaryKeyConstraint("account", name="pk_ingest_account"),
    )


def downgrade() -> None:
    op.drop_table("ingest_account")
