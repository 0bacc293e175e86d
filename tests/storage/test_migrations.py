"""The Alembic history on both databases: one head, round trips, models match, start-up rules."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from pubsub_cache.migrations import api


def test_the_history_has_a_single_head() -> None:
    assert len(api.script_directory().get_heads()) == 1


def test_base_to_head_to_base_to_head(bare_engine: Engine) -> None:
    assert api.current_revision(bare_engine) is None
    assert api.upgrade(bare_engine) == (None, api.head_revision())
    assert api.downgrade(bare_engine, "base") == (api.head_revision(), None)
    assert set(sa.inspect(bare_engine).get_table_names()) <= {"alembic_version"}
    api.upgrade(bare_engine)
    assert api.current_revision(bare_engine) == api.head_revision()


def test_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": api.include_name}
        )
        differences = compare_metadata(context, api.target_metadata())
    assert differences == []


def test_concurrent_start_ups_migrate_once(bare_engine: Engine) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            api.ensure_schema(bare_engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert api.current_revision(bare_engine) == api.head_revision()


def test_a_database_newer_than_the_code_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dfeed'")
    with pytest.raises(api.DatabaseNewerThanCode, match=r"revision f00dfeed.*upgrade pubsub-cache"):
        api.ensure_schema(engine)


def test_an_unknown_target_revision_is_refused(engine: Engine) -> None:
    with pytest.raises(api.UnknownRevision, match="'nope'"):
        api.downgrade(engine, "nope")
