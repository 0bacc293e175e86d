"""What every command needs, built once at the entry point: settings, engine, event log.

Built lazily, so ``pubsub-cache --help`` touches nothing, and every command that opens the
database applies pending migrations first (DESIGN: migrations run by themselves at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from pubsub_cache.events.db import DatabaseUnavailable, check_reachable, create_engine, safe_url
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema

from .settings import Settings, load_settings


@dataclass
class AppContext:
    """Lazily built dependencies of one command invocation."""

    config_file: Path | None = None
    _settings: Settings | None = field(default=None, init=False)
    _engine: Engine | None = field(default=None, init=False)
    _log: EventLog | None = field(default=None, init=False)

    @property
    def settings(self) -> Settings:
        """The settings, from the environment and the ``--config`` file."""
        if self._settings is None:
            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def engine(self, *, migrate: bool = True) -> Engine:
        """The database engine, checked reachable and (by default) migrated to head."""
        if self._engine is None:
            engine = open_engine(self.settings.database_url)
            if migrate:
                ensure_schema(engine)
            self._engine = engine
        return self._engine

    def event_log(self) -> EventLog:
        """The event log in the configured database."""
        if self._log is None:
            self._log = EventLog(self.engine())
        return self._log

    def close(self) -> None:
        """Release connections."""
        if self._log is not None:
            self._log.close()
        if self._engine is not None:
            self._engine.dispose()


def open_engine(url: str) -> Engine:
    """An engine for ``url``, with the SQLite file's folder created; raises if unreachable."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create the folder {folder}: {exc.strerror}"
            raise DatabaseUnavailable(safe_url(url), reason) from exc
    engine = create_engine(url)
    check_reachable(engine)
    return engine
