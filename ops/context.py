"""What every command needs, built once at the entry point: settings, engine, event log.

Built lazily, so ``pubsub-cache --help`` touches nothing, and every command that opens the
database applies pending migrations first (DESIGN: migrations run by themselves at start-up).

A database is created only by a command that writes (``run``, ``sync``, ``purge``,
``log import``, ``db upgrade``...), and an SQLite file's folder only at the default (XDG)
location: a typo in an explicit URL must not start an empty cache somewhere else.

Imports of the database side happen where they are first needed, not at the top: ``--help``
imports this module and must not pay for SQLAlchemy (tests/cli/test_startup.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from pubsub_cache.events.log import EventLog

    from .settings import Settings


class AppContext:
    """Lazily built dependencies of one command invocation."""

    def __init__(self, config_file: Path | None = None, *, json_output: bool = False) -> None:
        self.config_file = config_file
        self.json_output = json_output
        """Whether the command was asked for ``--json`` (errors are then JSON objects too)."""
        self._settings: Settings | None = None
        self._engine: Engine | None = None
        self._log: EventLog | None = None

    @property
    def settings(self) -> Settings:
        """The settings, from the environment and the ``--config`` file."""
        if self._settings is None:
            from .settings import load_settings

            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def engine(self, *, migrate: bool = True, create: bool = True) -> Engine:
        """The database engine, checked reachable and (by default) migrated to head.

        With ``create=False`` (read-only commands) a missing SQLite file is an error.
        """
        if self._engine is None:
            from pubsub_cache.migrations.api import ensure_schema

            settings = self.settings
            engine = open_engine(
                settings.database_url, create=create, default=settings.database_is_default
            )
            if migrate:
                ensure_schema(engine)
            self._engine = engine
        return self._engine

    def event_log(self, *, create: bool = True) -> EventLog:
        """The event log in the configured database."""
        if self._log is None:
            from pubsub_cache.events.log import EventLog

            self._log = EventLog(self.engine(create=create))
        return self._log

    def close(self) -> None:
        """Release connections."""
        if self._log is not None:
            self._log.close()
        if self._engine is not None:
            self._engine.dispose()


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (``None`` for PostgreSQL or an in-memory database)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).expanduser()
    return None


def open_engine(url: str, *, create: bool = True, default: bool = False) -> Engine:
    """An engine for ``url``; raises :class:`DatabaseUnavailable` if it cannot be reached.

    An SQLite file is created only when ``create``, its folder only when ``default`` too.
    """
    from pubsub_cache.events.db import check_reachable, create_engine

    path = sqlite_file(url)
    if path is not None and not path.exists():
        _may_create(url, path, create=create, default=default)
    engine = create_engine(url)
    check_reachable(engine)
    return engine


def _may_create(url: str, path: Path, *, create: bool, default: bool) -> None:
    from pubsub_cache.events.db import DatabaseUnavailable, safe_url

    from .settings import PREFIX

    folder = path.parent
    if folder.is_dir() or default:
        if not create:
            raise DatabaseUnavailable(
                safe_url(url),
                "no such file, and this command creates none (is the path right? "
                "`pubsub-cache db upgrade` creates an empty cache)",
            )
    else:
        raise DatabaseUnavailable(
            safe_url(url),
            f"the folder {folder} does not exist (create it, or correct "
            f"{PREFIX}DATABASE_URL): only the default location is created",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = f"cannot create the folder {folder}: {exc.strerror}"
        raise DatabaseUnavailable(safe_url(url), reason) from exc
