"""Batches are bounded in encoded bytes as well as in events (issue 10, point 6): a log of big
sync pages is read a few events at a time, whatever the batch size, by the projector and by a
rebuild; an event larger than the budget is still read, alone. The peak RSS of a replay of
sync pages of about 0.9 MB each is measured by ``pubsub-cache bench replay``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at
from pubsub_cache.events import Item, SyncPageFetched
from pubsub_cache.events.codec import encode
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item


def page(number: int) -> SyncPageFetched:
    """A sync page of 40 items of about 1 kB each."""
    items = [
        Item(id=f"{number}-{index}", payload=f"<p xmlns='u'>{'x' * 1000}</p>")
        for index in range(40)
    ]
    return SyncPageFetched(
        account=ACCOUNT,
        service=SERVICE,
        node=f"node-{number % 3}",
        observed_at=at(number),
        sync_id=f"sync-{number}",
        items=items,
    )


def test_a_batch_reads_at_most_its_byte_budget(engine: Engine, event_log: EventLog) -> None:
    pages = [page(number) for number in range(12)]
    size = len(encode(pages[0]))
    event_log.append(pages)
    projector = Projector(
        engine, registry=default_registry(), batch_size=1000, batch_bytes=int(2.5 * size)
    )
    reads = []
    while result := projector.run_once():
        if not result.read:
            break
        reads.append(result.read)
    assert reads == [2] * 6
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(pubsub_item)).scalar()
    assert count == 12 * 40
    # A rebuild reads the same way; an event over the budget is read alone.
    batches: list[int] = []
    rebuild = Rebuild(engine, default_registry(), batch_bytes=size // 2)
    rebuild.prepare(fresh=True)
    rebuild.catch_up(lambda position, _head: batches.append(position))
    assert batches == list(range(1, 13))
    with engine.connect() as connection:
        assert rebuild.shadow_digest() == read_model_digest(connection)
    rebuild.discard()
