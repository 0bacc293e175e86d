"""Invariant 2, exactly-once effect: kill -9 the projector process at random points, restart it,
and the read model equals one built without crashes (compared by digest)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import at, atom
from pubsub_cache.events import (
    Event,
    Item,
    ItemsPublished,
    ItemsRetracted,
    NodePurged,
    NotificationRejected,
)
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.bench.payloads import publish_events
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.runner import NotLeader, Projector
from pubsub_cache.projector.schema import projector_checkpoint, pubsub_counter

LEASE = 0.3
SERVICE = "juliet@capulet.lit"  # publish_events' default
KILLS = 8


def history() -> list[Event]:
    """Events whose second application shows in the digest: rejection counters, publishes
    retracted then re-published with another payload, purges."""
    events: list[Event] = []
    for chunk in range(12):
        node = f"urn:xmpp:microblog:0:n{chunk % 3}"
        batch = publish_events(300, start=chunk * 150, node=node, account="romeo@x")
        for index, event in enumerate(batch):
            events.append(event)
            if index % 10 == 0:  # counted: applied twice, counted twice
                events.append(rejected(node, when=index))
        ids = [f"post-{chunk * 150 + i}" for i in range(0, 40, 3)]
        events.append(ItemsRetracted(**scope(node), item_ids=ids))
        again = [Item(id=i, payload=atom(f"again {chunk}")) for i in ids[:5]]
        events.append(ItemsPublished(**scope(node), items=again))
        if chunk in (4, 9):
            events.append(NodePurged(**scope(node)))
            events.append(ItemsPublished(**scope(node), items=[Item(id="after-purge")]))
    return events


def scope(node: str) -> dict[str, Any]:
    """The node of publish_events (its default service), at a fixed instant."""
    return {"account": "romeo@x", "service": SERVICE, "node": node, "observed_at": at(0)}


def rejected(node: str, *, when: float) -> NotificationRejected:
    return NotificationRejected(
        account="romeo@x", service="mallory@x/r", node=node, observed_at=at(when), reason="spoof"
    )


def projector_process(url: str) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "project"]
    command += ["--batch-size", "40", "--lease-seconds", str(LEASE)]
    env = {**os.environ, "PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def progress(engine: Engine) -> tuple[int, int]:
    """(checkpoint position, rejection count) seen in one snapshot."""
    with engine.connect() as connection:
        position = connection.execute(sa.select(projector_checkpoint.c.position)).scalar()
        count = connection.execute(
            sa.select(sa.func.sum(pubsub_counter.c.value)).where(
                pubsub_counter.c.name == "rejected"
            )
        ).scalar()
    return int(position or 0), int(count or 0)


def kill_after_progress(process: subprocess.Popen[bytes], engine: Engine, since: int) -> None:
    """Kill -9 the projector as soon as the read model shows progress past ``since`` rejections.

    Observed progress, never a delay: start-up may take any time. The read model is watched
    rather than the checkpoint so that a projector committing its changes before its checkpoint
    (the bug this test exists for) is killed in between.
    """
    deadline = time.monotonic() + 60
    while progress(engine)[1] <= since:
        assert process.poll() is None, "the projector exited"
        assert time.monotonic() < deadline, "the projector made no progress in 60 s"
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing_and_applies_nothing_twice(
    database_url: str, engine: Engine, event_log: EventLog, tmp_path: Path
) -> None:
    events = history()
    event_log.append(events)
    head = event_log.head()
    interrupted_at: list[int] = []
    seen = 0
    for _ in range(KILLS):
        kill_after_progress(projector_process(database_url), engine, seen)
        position, seen = progress(engine)
        interrupted_at.append(position)
        if position >= head:
            break
    assert any(0 < position < head for position in interrupted_at), interrupted_at
    # The last process's lease expires; then one projector finishes the log.
    finish = Projector(engine, registry=default_registry(), lease_seconds=LEASE)
    while True:
        try:
            finish.catch_up()
            break
        except NotLeader:
            time.sleep(0.05)
    finish.release()

    reference = create_engine(f"sqlite:///{tmp_path}/reference.sqlite3")
    ensure_schema(reference)
    EventLog(reference).append(events)
    Projector(reference, registry=default_registry(), batch_size=1000).catch_up()
    with engine.connect() as crashed, reference.connect() as clean:
        assert read_model_digest(crashed) == read_model_digest(clean)
        assert progress(engine)[1] == sum(isinstance(e, NotificationRejected) for e in events)
    reference.dispose()
