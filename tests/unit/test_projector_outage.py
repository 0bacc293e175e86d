"""A projector whose database is unreachable from the start keeps retrying instead of dying,
and says so once, not once per attempt (the outages of a running daemon, against a real
PostgreSQL, are in tests/storage/test_database_outage.py)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from pubsub_cache.events.db import create_engine
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from xmpp_fixtures import eventually


@pytest.mark.anyio
async def test_an_unreachable_database_is_retried_with_backoff_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine(
        "postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    attempts = 0

    def count(*_args: Any) -> None:
        nonlocal attempts
        attempts += 1

    sa.event.listen(engine, "do_connect", count)
    projector = Projector(engine, registry=default_registry())
    with caplog.at_level(logging.WARNING):
        async with anyio.create_task_group() as group:
            group.start_soon(projector.run)
            await eventually(lambda: attempts >= 3)
            group.cancel_scope.cancel()
    warnings = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(warnings) == 1
    engine.dispose()
