"""``pubsub-cache db ...``: the schema's revision, upgrade and downgrade."""

from __future__ import annotations

import click

from pubsub_cache.events.db import safe_url
from pubsub_cache.migrations import api

from .cli_options import emit, json_option
from .context import AppContext, sqlite_file


@click.group()
def db() -> None:
    """Database schema (applied automatically by every other command)."""


@db.command()
@json_option
@click.pass_obj
def current(app: AppContext, as_json: bool) -> None:
    """Print the schema revision of the database and of this code (creates nothing)."""
    url = app.settings.database_url
    path = sqlite_file(url)
    revision = None
    missing = path is not None and not path.exists()
    creatable = path is not None and (path.parent.is_dir() or app.settings.database_is_default)
    if not (missing and creatable):
        # A missing file where one may be created is "none yet"; engine() reports the rest.
        revision = api.current_revision(app.engine(migrate=False, create=False))
    head = api.head_revision()
    if as_json:
        emit({"database": safe_url(url), "revision": revision, "head": head})
        return
    empty = "none (no file yet)" if missing else "none (empty database)"
    click.echo(f"database: {safe_url(url)}")
    click.echo(f"revision: {revision or empty}")
    click.echo(f"head:     {head}")


@db.command()
@click.argument("revision", default="head")
@json_option
@click.pass_obj
def upgrade(app: AppContext, revision: str, as_json: bool) -> None:
    """Migrate the database up to REVISION (default: head); creates the database if need be."""
    before, after = api.upgrade(app.engine(migrate=False), revision)
    if as_json:
        emit({"before": before, "after": after})
        return
    click.echo(f"upgraded {before or 'base'} -> {after or 'base'}")


@db.command()
@click.argument("revision")
@json_option
@click.pass_obj
def downgrade(app: AppContext, revision: str, as_json: bool) -> None:
    """Migrate the database down to REVISION (``base`` removes every table)."""
    before, after = api.downgrade(app.engine(migrate=False, create=False), revision)
    if as_json:
        emit({"before": before, "after": after})
        return
    click.echo(f"downgraded {before or 'base'} -> {after or 'base'}")
