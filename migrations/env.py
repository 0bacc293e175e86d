"""Alembic environment: always run from code (pubsub_cache.migrations.api) on a shared connection.

The connection arrives in ``config.attributes["connection"]``, already inside the transaction
that serialises concurrent start-ups; nothing here opens a database of its own.
"""

from __future__ import annotations

from alembic import context

from pubsub_cache.migrations.api import include_name, target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "pubsub-cache migrations run through `pubsub-cache db ...`, not the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
