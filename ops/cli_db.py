"""``pubsub-cache db ...``: the schema's revision, upgrade and downgrade."""

from __future__ import annotations

import click

from pubsub_cache.events.db import safe_url
from pubsub_cache.migrations import api

from .context import AppContext


@click.group()
def db() -> None:
    """Database schema (applied automatically by every other command)."""


@db.command()
@click.pass_obj
def current(app: AppContext) -> None:
    """Print the schema revision of the database and of this code."""
    engine = app.engine(migrate=False)
    click.echo(f"database: {safe_url(engine.url)}")
    click.echo(f"revision: {api.current_revision(engine) or 'none (empty database)'}")
    click.echo(f"head:     {api.head_revision()}")


@db.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(app: AppContext, revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    before, after = api.upgrade(app.engine(migrate=False), revision)
    click.echo(f"upgraded {before or 'base'} -> {after or 'base'}")


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(app: AppContext, revision: str) -> None:
    """Migrate the database down to REVISION (``base`` removes every table)."""
    before, after = api.downgrade(app.engine(migrate=False), revision)
    click.echo(f"downgraded {before or 'base'} -> {after or 'base'}")
