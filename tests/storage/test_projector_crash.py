"""Invariant 2, exactly-once effect: kill -9 the projector process at random points, restart it,
and the read model equals one built without crashes (compared by digest)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import purged, retracted
from pubsub_cache.events import Event
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import publish_events
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import projector_checkpoint

LEASE = 0.3


def history() -> list[Event]:
    events: list[Event] = []
    for chunk in range(12):
        node = f"urn:xmpp:microblog:0:n{chunk % 3}"
        events += publish_events(1000, start=chunk * 500, node=node, account="romeo@x")
        events.append(
            retracted(
                *(f"post-{chunk * 500 + i}" for i in range(0, 40, 3)), node=node, account="romeo@x"
            )
        )
        if chunk == 7:
            events.append(purged(node=node, account="romeo@x"))
    return events


def projector_process(url: str) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "project"]
    command += ["--batch-size", "40", "--lease-seconds", str(LEASE)]
    env = {**os.environ, "PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def checkpoint_position(engine: Engine) -> int:
    with engine.connect() as connection:
        value = connection.execute(sa.select(projector_checkpoint.c.position)).scalar()
    return int(value or 0)


@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing_and_applies_nothing_twice(
    database_url: str, engine: Engine, event_log: EventLog, tmp_path: Path
) -> None:
    events = history()
    event_log.append(events)
    head = event_log.head()
    rng = random.Random(2026)
    interrupted_at: list[int] = []
    for _ in range(6):
        process = projector_process(database_url)
        time.sleep(rng.uniform(0.8, 2.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted_at.append(checkpoint_position(engine))
        time.sleep(LEASE + 0.1)  # the dead process's lease expires
        if interrupted_at[-1] >= head:
            break
    assert any(0 < position < head for position in interrupted_at), interrupted_at
    Projector(engine, registry=default_registry(), lease_seconds=LEASE).catch_up()

    reference = create_engine(f"sqlite:///{tmp_path}/reference.sqlite3")
    ensure_schema(reference)
    EventLog(reference).append(events)
    Projector(reference, registry=default_registry(), batch_size=1000).catch_up()
    with engine.connect() as crashed, reference.connect() as clean:
        assert read_model_digest(crashed) == read_model_digest(clean)
    reference.dispose()
