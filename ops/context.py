"""What every command needs, built once at the entry point: settings, engine, event log.

Built lazily, so ``pubsub-cache --help`` touches nothing, and every command that opens the
database applies pending migrations first (DESIGN: migrations run by themselves at start-up).

A database is created only by a command that writes (``run``, ``sync``, ``purge``,
``log import``, ``db upgrade``...), and an SQLite file's folder only at the default (XDG)
location: a typo in an explicit URL must not start an empty cache somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from pubsub_cache.events.db import DatabaseUnavailable, check_reachable, create_engine, safe_url
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema

from .settings import PREFIX, Settings, load_settings


@dataclass
class AppContext:
    """Lazily built dependencies of one command invocation."""

    config_file: Path | None = None
    json_output: bool = False
    """Whether the command was asked for ``--json`` (errors are then JSON objects too)."""
    _settings: Settings | None = field(default=None, init=False)
    _engine: Engine | None = field(default=None, init=False)
    _log: EventLog | None = field(default=None, init=False)

    @property
    def settings(self) -> Settings:
        """The settings, from the environment and the ``--config`` file."""
        if self._settings is None:
            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def engine(self, *, migrate: bool = True, create: bool = True) -> Engine:
        """The database engine, checked reachable and (by default) migrated to head.

        With ``create=False`` (read-only commands) a missing SQLite file is an error.
        """
        if self._engine is None:
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
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).expanduser()
    return None


def open_engine(url: str, *, create: bool = True, default: bool = False) -> Engine:
    """An engine for ``url``; raises :class:`DatabaseUnavailable` if it cannot be reached.

    An SQLite file is created only when ``create``, its folder only when ``default`` too.
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        _may_create(url, path, create=create, default=default)
    engine = create_engine(url)
    check_reachable(engine)
    return engine


def _may_create(url: str, path: Path, *, create: bool, default: bool) -> None:
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
