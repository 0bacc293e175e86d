"""The one SQLAlchemy ``MetaData`` of the project and the event log's table.

Every table the migrations create is declared on :data:`metadata` (the projector adds its
read-model tables to it), so that a test can ask Alembic's autogenerate whether the models and
the migration history agree. The naming convention gives every constraint a stable name, which
batch mode on SQLite needs to alter tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: A 64-bit integer that is also SQLite's rowid alias (only ``INTEGER PRIMARY KEY`` is).
Position = BigInteger().with_variant(Integer(), "sqlite")

event_table = Table(
    "event",
    metadata,
    # AUTOINCREMENT on SQLite so that a position is never reused, even after the newest
    # events are deleted by compaction (plain rowids restart from max(rowid) + 1).
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("account", Text, nullable=False),
    Column("service", Text, nullable=False),
    Column("node", Text, nullable=False),
    Column("type", String(64), nullable=False),
    Column("recorded_at", Float, nullable=False, comment="Unix time of the append"),
    Column("body", LargeBinary, nullable=False, comment="msgpack of the event (events.codec)"),
    sqlite_autoincrement=True,
)
