"""A projector whose database is unreachable keeps retrying instead of dying."""

from __future__ import annotations

import logging

import anyio
import pytest

from pubsub_cache.events.db import create_engine
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector


@pytest.mark.anyio
async def test_an_unreachable_database_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine(
        "postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    projector = Projector(engine, registry=default_registry())
    with caplog.at_level(logging.WARNING), anyio.move_on_after(2.5):
        await projector.run()
    retries = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(retries) >= 2
    engine.dispose()
