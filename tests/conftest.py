"""Fixtures shared by the whole suite: the SQLite/PostgreSQL matrix for storage tests.

Every test that asks for ``database_url`` (or ``engine``, ``event_log``) runs twice: on an SQLite
file and on a fresh schema of the PostgreSQL server named by ``PUBSUB_CACHE_TEST_POSTGRES_URL``.
Without that variable the PostgreSQL half is skipped locally, and fails under CI, where the
test command always provides it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import scratch_postgres, sqlite_url
from tests_support import postgres_url_or_skip

#: Fixtures of the XMPP tests (local Prosody, sessions) live in tests/xmpp_fixtures.py; a plugin
#: rather than a second conftest.py, so that mypy sees one module per name.
pytest_plugins = ["xmpp_fixtures"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "cache.sqlite3")
        return
    with scratch_postgres(postgres_url_or_skip(), prefix="test") as url:
        yield url


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    """An engine on the empty database (no schema)."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    """An engine on a database migrated to head."""
    ensure_schema(bare_engine)
    return bare_engine


@pytest.fixture
def event_log(engine: Engine) -> Iterator[EventLog]:
    """The event log of a migrated database."""
    log = EventLog(engine)
    yield log
    log.close()
