"""A parked command spanning nodes, retried under a partition's name, applies to that
partition's nodes only (as it would have in the partition's own batch: issue 10, point 1)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, published
from pubsub_cache.events import CachePurged
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parking import park
from pubsub_cache.projector.retry import retry_parked
from pubsub_cache.projector.runner import Partition, Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node

NODES = [f"n{n}" for n in range(8)]


def test_partition_names_are_read_back() -> None:
    assert Partition.of_checkpoint("main/1-of-2") == Partition(1, 2)
    assert Partition.of_checkpoint("main") == Partition()
    assert Partition.of_checkpoint("main/3-of-2") == Partition()


def test_a_parked_purge_retried_by_a_partition_spares_the_other_partitions_nodes(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published(f"item-{node}", node=node) for node in NODES])
    Projector(engine, registry=default_registry()).catch_up()
    [position] = event_log.append([CachePurged(account=ACCOUNT, observed_at=at(1))])
    first = Partition(0, 2)
    with write_transaction(engine) as connection:  # as partition 0's batch parks it
        park(connection, first.checkpoint_name("main"), position, (ACCOUNT, "", ""), "x", now=0.0)

    assert retry_parked(engine, default_registry(), first.checkpoint_name("main")) == (1, 0)

    with engine.connect() as connection:
        left = set(
            connection.execute(
                sa.select(pubsub_node.c.node).join(
                    pubsub_item, pubsub_item.c.node_id == pubsub_node.c.id
                )
            ).scalars()
        )
    owned = {node for node in NODES if first.owns_node((ACCOUNT, SERVICE, node))}
    assert owned
    assert owned != set(NODES)
    assert left == set(NODES) - owned
