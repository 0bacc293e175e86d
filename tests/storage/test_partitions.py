"""Partitioned projectors (invariant 3): a command spanning nodes takes effect in log order in
every partition, whatever the schedule, and the read model equals a single projector's."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, at, published
from pubsub_cache.events import (
    CachePurged,
    CacheReset,
    Event,
    Item,
    ItemsListed,
    ItemsPublished,
    ItemsRetracted,
    NodeConfigured,
    NodeDeleted,
    NodePurged,
    ServiceOrder,
    SyncCompleted,
    SyncPageFetched,
    SyncStarted,
)
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.runner import Partition, Projector
from pubsub_cache.projector.schema import (
    ReadModel,
    parked_event,
    projector_checkpoint,
    pubsub_content,
    pubsub_counter,
    pubsub_item,
    pubsub_node,
    shadow_read_model,
)


def item_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.select(pubsub_item.c.item_id)).scalars())


def test_a_purge_of_every_node_keeps_what_another_partition_applied_after_it(
    engine: Engine, event_log: EventLog
) -> None:
    # The reproduction: one item on each of 8 nodes, both partitions caught up, a purge
    # of every node, one new item on each node; partition 1 catches up first, then partition 0.
    nodes = [f"n{index}" for index in range(8)]
    first, second = (
        Projector(engine, registry=default_registry(), partition=Partition(index, 2))
        for index in range(2)
    )
    event_log.append([published(f"old-{node}", node=node) for node in nodes])
    first.catch_up()
    second.catch_up()
    event_log.append([CachePurged(account=ACCOUNT, observed_at=at(1))])
    event_log.append([published(f"new-{node}", node=node) for node in nodes])
    second.catch_up()
    first.catch_up()
    assert item_ids(engine) == {f"new-{node}" for node in nodes}


SERVICES = ["pubsub.a.example", "pubsub.b.example"]
NODE_KEYS = [
    (SERVICES[0], "urn:xmpp:microblog:0"),
    (SERVICES[1], "urn:xmpp:microblog:0"),
    (SERVICES[0], "http://jabber.org/protocol/tune"),
    (SERVICES[0], "plain"),
    (SERVICES[1], "plain"),
]
KEYS = st.sampled_from(NODE_KEYS)
ORDERS: list[ServiceOrder | None] = [None, "creation", "modification"]
IDS = st.sampled_from(["a", "b", "c", "d", "e"])


class Common(TypedDict):
    """The fields every node event of a history shares."""

    account: str
    service: str
    node: str
    observed_at: datetime


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Random histories of every kind of event that places, evicts or removes items."""
    events: list[Event] = []
    syncs = 0
    for step in range(draw(st.integers(1, 30))):
        (service, node), when = draw(KEYS), at(step)
        common = Common(account=ACCOUNT, service=service, node=node, observed_at=when)
        kind = draw(st.sampled_from(KINDS))
        if kind == "publish":
            ids = draw(st.lists(IDS, min_size=1, max_size=3))
            version = draw(st.integers(0, 2))
            items = [Item(id=i, payload=f"<p xmlns='u'>{version}</p>") for i in ids]
            events.append(ItemsPublished(**common, items=items))
        elif kind == "retract":
            events.append(ItemsRetracted(**common, item_ids=draw(st.lists(IDS, min_size=1))))
        elif kind == "node-purge":
            events.append(NodePurged(**common))
        elif kind == "purge":
            scope = draw(st.sampled_from(["all", "service", "node", "age", "type"]))
            events.append(
                CachePurged(
                    account=ACCOUNT,
                    observed_at=when,
                    service=service if scope in ("service", "node") else None,
                    node=node if scope == "node" else None,
                    older_than=at(draw(st.integers(0, step))) if scope == "age" else None,
                    node_type=draw(st.sampled_from(["blog", "tune"])) if scope == "type" else None,
                )
            )
        elif kind == "reset":
            scope = draw(st.sampled_from(["all", "service", "node"]))
            events.append(
                CacheReset(
                    account=ACCOUNT,
                    observed_at=when,
                    service=None if scope == "all" else service,
                    node=node if scope == "node" else None,
                )
            )
        elif kind == "sync":
            syncs += 1
            sync_id = f"s{syncs}"
            order = draw(st.sampled_from(ORDERS))
            listed = draw(st.lists(IDS, max_size=5, unique=True))
            events.append(SyncStarted(**common, sync_id=sync_id, order=order))
            events.append(
                SyncPageFetched(
                    **common,
                    sync_id=sync_id,
                    items=[Item(id=i, payload=f"<p xmlns='u'>{i}</p>") for i in listed],
                )
            )
            complete = draw(st.booleans())
            events.append(
                SyncCompleted(**common, sync_id=sync_id, complete=complete, item_count=len(listed))
            )
        elif kind == "configure":
            limit = draw(st.sampled_from(["1", "2", "3", "max"]))
            events.append(NodeConfigured(**common, form={"pubsub#max_items": [limit]}))
        elif kind == "listed":
            ids = draw(st.lists(IDS, max_size=5, unique=True))
            events.append(ItemsListed(**common, item_ids=ids, complete=draw(st.booleans())))
        else:
            events.append(NodeDeleted(**common))
    return events


KINDS = [
    "publish",
    "publish",
    "publish",
    "retract",
    "node-purge",
    "purge",
    "purge",
    "reset",
    "sync",
    "configure",
    "listed",
    "delete",
]

#: A step of a schedule: append the next ``n`` events, or run one batch of ``size`` events of
#: partition ``p`` (taken modulo the number of partitions).
STEPS = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 8), st.just(0)),
    st.tuples(st.just("run"), st.integers(0, 3), st.integers(1, 6)),
)


def wipe(engine: Engine, shadow: ReadModel) -> None:
    with write_transaction(engine) as connection:
        for table in (
            shadow.item,
            shadow.content,
            shadow.counter,
            shadow.node,
            pubsub_item,
            pubsub_content,
            pubsub_counter,
            pubsub_node,
            parked_event,
            projector_checkpoint,
            event_table,
        ):
            connection.execute(table.delete())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=histories(), count=st.integers(1, 4), schedule=st.lists(STEPS, max_size=30))
def test_any_schedule_of_partitions_builds_what_one_projector_builds(
    engine: Engine, events: list[Event], count: int, schedule: list[tuple[str, int, int]]
) -> None:
    shadow = shadow_read_model(engine.dialect.name)
    with write_transaction(engine) as connection:
        for table in (shadow.node, shadow.content, shadow.item, shadow.counter):
            table.create(connection, checkfirst=True)
    wipe(engine, shadow)
    log = EventLog(engine)
    appended = 0

    def run(index: int, size: int) -> None:
        partition = Partition(index, count)
        projector = Projector(
            engine, registry=default_registry(), partition=partition, batch_size=size, owner="p"
        )
        projector.run_once()

    for kind, first, second in schedule:
        if kind == "append" and appended < len(events):
            log.append(events[appended : appended + first])
            appended += first
        elif kind == "run":
            run(first % count, second)
    log.append(events[appended:])
    for index in range(count):
        Projector(
            engine, registry=default_registry(), partition=Partition(index, count), owner="p"
        ).catch_up()
    Projector(
        engine, registry=default_registry(), name="single", tables=shadow, owner="p"
    ).catch_up()
    log.close()
    with engine.connect() as connection:
        partitioned = read_model_digest(connection)
        single = read_model_digest(connection, tables=tables_of(shadow))
        assert (
            connection.execute(sa.select(sa.func.count()).select_from(parked_event)).scalar() == 0
        )
    assert partitioned == single


def tables_of(model: ReadModel) -> dict[str, sa.Table]:
    return {
        "pubsub_node": model.node,
        "pubsub_item": model.item,
        "pubsub_counter": model.counter,
        "pubsub_content": model.content,
    }
