"""One ingest per account: ``ingest_lease`` (account, owner, expires), see ``xmpp/lease.py``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_lease",
        sa.Column("account", sa.Text(), nullable=False, comment="the bare JID ingested"),
        sa.Column("owner", sa.Text(), nullable=False, comment="host:pid:token[:pidns] holding it"),
        sa.Column("expires", sa.Float(), nullable=False, comment="Unix time; renewed while held"),
        sa.PrimaryKeyConstraint("account", name="pk_ingest_lease"),
    )


def downgrade() -> None:
    op.drop_table("ingest_lease")
