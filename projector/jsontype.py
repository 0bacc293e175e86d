"""The read model's JSON columns: ``JSON`` on SQLite, ``JSONB`` on PostgreSQL.

``sa.JSON().with_variant(postgresql.JSONB(), "postgresql")`` says the same, but it needs a
``JSONB`` instance when the tables are declared, and that imports SQLAlchemy's whole PostgreSQL
dialect (~20 ms) into every program that touches the schema: a cached ``pubsub-cache get`` on
SQLite among them (``pubsub-cache bench cli``). This type picks its implementation when a
dialect asks for it, so the dialect is imported by the engines that use it, and only by them.

What it compiles to is what the variant compiled to (``JSON`` / ``JSONB``), so the migrations
(which keep the variant: revision scripts import nothing from the app) and the models still
match (tests/storage/test_migrations.py, on both engines).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class JSONType(TypeDecorator[Any]):
    """JSON, stored as ``JSONB`` on PostgreSQL (indexable, compared by value)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())
