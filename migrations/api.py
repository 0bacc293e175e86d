"""Running the Alembic history from code: automatic upgrade at start-up, and the ``db`` commands.

One history serves SQLite and PostgreSQL. Start-ups are serialised: the upgrade runs inside
one transaction that first takes a lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-level
advisory lock on PostgreSQL), so two daemons starting together never both migrate. Both
databases have transactional DDL, so a failed migration leaves the schema as it was.

Every command checks the schema at start-up, so that check must be cheap: one query for the
database's revision, compared with the head read from the revision files' ``revision`` and
``down_revision`` lines (:func:`known_head`; a test checks it equals Alembic's). Loading
Alembic and its script directory costs more than the rest of a cached read, so it happens only
to migrate or to answer the ``db`` commands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events.db import is_sqlite, safe_url, write_transaction

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import MetaData

#: The revision files, and the two lines of each that place it in the history.
_VERSIONS = Path(__file__).parent / "versions"
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(?:None|['\"]([^'\"]+)['\"])", re.MULTILINE)

#: Key of the PostgreSQL advisory lock that serialises migrations ("pubsub-c" in ASCII).
_ADVISORY_LOCK_KEY = 0x7075627375622D63


class DatabaseNewerThanCode(PubsubCacheError):
    """Raised when the database was migrated by a newer pubsub-cache than this one."""

    def __init__(self, url: str, revision: str, head: str) -> None:
        self.revision = revision
        super().__init__(
            f"the database {url} is at schema revision {revision}, which this pubsub-cache does "
            f"not know (it knows up to {head}): upgrade pubsub-cache, or point it elsewhere"
        )


class UnknownRevision(PubsubCacheError):
    """Raised when asked to migrate to a revision the history does not have."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"no schema revision {revision!r} in the migration history")


def target_metadata() -> MetaData:
    """The metadata the history must match: every table of every package."""
    from pubsub_cache.events.schema import metadata
    from pubsub_cache.projector import schema  # noqa: F401  (declares the read model)

    return metadata


#: Objects the metadata does not declare: dialect-specific search objects, which the migrations
#: create, and the shadow tables a rebuild (``replay``) creates and drops by itself.
UNDECLARED = ("pubsub_item_fts", "search_vector", "ix_pubsub_item_search", "rebuild_")


def include_name(name: str | None, _type: str, _parents: object) -> bool:
    """Autogenerate filter: skip what the metadata does not declare (see :data:`UNDECLARED`)."""
    return not (name and name.startswith(UNDECLARED))


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """The migration history shipped with this version."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


def known_head() -> str:
    """The newest revision this code knows, read from the revision files without Alembic.

    The one revision no other names as its ``down_revision`` (the history has a single head:
    tests/cli/test_startup.py checks that Alembic finds this one).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in _VERSIONS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            continue  # not a revision file (``__init__.py``)
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migration history has {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _stamped_revisions(engine: Engine) -> list[str] | None:
    """The revisions in ``alembic_version``, by one query (``None`` when it cannot be read:
    an empty database, or an error that the slow path will report properly)."""
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            return [row[0] for row in rows]
    except sa.exc.DBAPIError:
        return None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate up to ``revision``; returns the revisions before and after."""
    return _migrate(engine, revision, up=True)


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Migrate down to ``revision`` (``base`` empties the database)."""
    return _migrate(engine, revision, up=False)


def ensure_schema(engine: Engine) -> None:
    """Bring the database to this code's head, as every entry point does at start-up.

    Cheap when already there (one query, no lock, no Alembic). Raises
    :class:`DatabaseNewerThanCode`.
    """
    if _stamped_revisions(engine) == [known_head()]:
        return
    upgrade(engine)


def _migrate(engine: Engine, revision: str, *, up: bool) -> tuple[str | None, str | None]:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    scripts = script_directory()
    if revision not in ("head", "base") and _unknown(scripts, revision):
        raise UnknownRevision(revision)
    with write_transaction(engine) as connection:
        if not is_sqlite(connection):
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})")
        before = MigrationContext.configure(connection).get_current_revision()
        if before is not None and _unknown(scripts, before):
            raise DatabaseNewerThanCode(safe_url(engine.url), before, head_revision())
        if up:
            command.upgrade(_config(connection), revision)
        else:
            command.downgrade(_config(connection), revision)
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after


def _unknown(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is None
    except Exception:  # alembic raises several types for an unknown id
        return True
