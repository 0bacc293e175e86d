"""The projector as a process: leases, parking (invariant 5), replay equals live (invariant 3),
and a random-sequence comparison with a small in-memory model of the read model."""

from __future__ import annotations

import time

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published, purged, retracted
from pubsub_cache.events import Event, NodeDeleted
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, NodeInfo, default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.parking import list_parked
from pubsub_cache.projector.retry import drop_parked, retry_parked
from pubsub_cache.projector.runner import Partition, Projector
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node


def digest(engine: Engine) -> str:
    with engine.connect() as connection:
        return read_model_digest(connection)


def test_a_second_projector_waits_then_takes_over_when_the_lease_expires(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("1")])
    first = Projector(engine, registry=default_registry(), lease_seconds=0.5, owner="first")
    second = Projector(engine, registry=default_registry(), lease_seconds=0.5, owner="second")
    assert first.run_once().leader
    event_log.append([published("2")])
    assert not second.run_once().leader
    time.sleep(0.7)  # the first "dies" without releasing its lease
    result = second.run_once()
    assert result.leader
    assert result.applied == 1
    assert not first.run_once().leader


def test_a_released_lease_is_taken_at_once(engine: Engine, event_log: EventLog) -> None:
    first = Projector(engine, registry=default_registry(), lease_seconds=60)
    second = Projector(engine, registry=default_registry(), lease_seconds=60)
    assert first.run_once().leader
    first.release()
    assert second.run_once().leader


class Poison:
    """An analyser hook that fails for the node named "poison" while ``active``."""

    active = True

    def __call__(self, info: NodeInfo) -> tuple[str | None, str | None]:
        if self.active and info.node == "poison":
            raise RuntimeError("cannot classify the poison node")
        return None, None


def poisoned_registry(poison: Poison) -> AnalyserRegistry:
    registry = AnalyserRegistry()
    registry.register(Analyser(name="poisoned", classify=poison))
    return registry


def test_a_bad_event_is_parked_its_node_waits_and_others_go_on(
    engine: Engine, event_log: EventLog
) -> None:
    poison = Poison()
    projector = Projector(engine, registry=poisoned_registry(poison), batch_size=100)
    event_log.append([published("a", node="poison"), published("1"), published("b", node="poison")])
    projector.catch_up()
    with engine.connect() as connection:
        parked = list_parked(connection)
        nodes = connection.execute(sa.select(pubsub_node.c.node)).scalars().all()
    assert nodes == [NODE]
    assert [(p.position, p.node) for p in parked] == [(1, "poison"), (3, "poison")]
    assert "cannot classify the poison node" in parked[0].error
    assert "waiting behind the parked event at position 1" in parked[1].error
    event_log.append([published("c", node="poison"), published("2")])
    projector.catch_up()
    with engine.connect() as connection:
        assert len(list_parked(connection)) == 3
    # The cause is fixed: a retry applies the node's events in order.
    poison.active = False
    assert retry_parked(engine, poisoned_registry(poison), "main") == (3, 0)
    with engine.connect() as connection:
        poison_items = connection.execute(
            sa.select(pubsub_item.c.item_id)
            .join(pubsub_node)
            .where(pubsub_node.c.node == "poison")
            .order_by(pubsub_item.c.created_position)
        ).scalars()
        assert list(poison_items) == ["a", "b", "c"]
    event_log.append([published("d", node="poison")])
    projector.catch_up()
    with engine.connect() as connection:
        assert list_parked(connection) == []


def test_parked_events_can_be_dropped(engine: Engine, event_log: EventLog) -> None:
    projector = Projector(engine, registry=poisoned_registry(Poison()))
    event_log.append([published("a", node="poison")])
    projector.catch_up()
    assert drop_parked(engine, "main") == 1
    with engine.connect() as connection:
        assert list_parked(connection) == []


def history() -> list[Event]:
    """A varied history touching several nodes, syncs and commands."""
    events: list[Event] = []
    for step in range(60):
        node = f"n{step % 4}"
        events.append(published(f"i{step % 9}", node=node, payload=f"<p xmlns='u'>{step}</p>"))
        if step % 7 == 3:
            events.append(retracted(f"i{(step + 2) % 9}", node=node))
        if step % 17 == 5:
            events.append(purged(node=node))
        if step % 23 == 11:
            events.append(
                NodeDeleted(account=ACCOUNT, service=SERVICE, node=node, observed_at=at(step))
            )
    return events


def test_replay_equals_live(engine: Engine, event_log: EventLog, tmp_path: object) -> None:
    # Live: events arrive a few at a time and the projector follows in small batches.
    live = Projector(engine, registry=default_registry(), batch_size=3)
    events = history()
    for start in range(0, len(events), 5):
        event_log.append(events[start : start + 5])
        live.run_once()
    live.catch_up()
    # Replay: the whole log at once into a fresh database, in large batches.
    other = create_engine(f"sqlite:///{tmp_path}/replay.sqlite3")
    ensure_schema(other)
    EventLog(other).append(events)
    Projector(other, registry=default_registry(), batch_size=1000).catch_up()
    assert digest(engine) == digest(other)
    other.dispose()


ITEM_IDS = st.sampled_from(["a", "b", "c", "d"])
NODES = st.sampled_from(["x", "y"])
ACTIONS = st.one_of(
    st.tuples(st.just("publish"), NODES, ITEM_IDS, st.integers(0, 2)),
    st.tuples(st.just("retract"), NODES, ITEM_IDS, st.just(0)),
    st.tuples(st.just("purge"), NODES, st.just(""), st.just(0)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(actions=st.lists(ACTIONS, max_size=25), batch=st.integers(1, 10))
def test_random_histories_match_a_reference_model(
    engine: Engine, actions: list[tuple[str, str, str, int]], batch: int
) -> None:
    account = f"acct{time.monotonic_ns()}@example.org"  # a fresh view per example
    reference: dict[str, dict[str, str]] = {}
    events: list[Event] = []
    for kind, node, item_id, version in actions:
        if kind == "publish":
            payload = f"<p xmlns='u'>{version}</p>"
            events.append(published(item_id, node=node, account=account, payload=payload))
            reference.setdefault(node, {})[item_id] = payload
        elif kind == "retract":
            events.append(retracted(item_id, node=node, account=account))
            reference.setdefault(node, {}).pop(item_id, None)
        else:
            events.append(purged(node=node, account=account))
            reference[node] = {}
    EventLog(engine).append(events)
    # One owner for every example: each renews the lease the previous one held.
    projector = Projector(engine, registry=default_registry(), batch_size=batch, owner="model")
    projector.catch_up()
    query = (
        sa.select(pubsub_node.c.node, ITEM_ROWS.c.item_id, ITEM_ROWS.c.payload)
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(pubsub_node.c.account == account)
    )
    with engine.connect() as connection:
        # Every content is referenced, every reference has its content (nothing collected
        # too early, nothing left behind).
        referenced = set(
            connection.execute(
                sa.select(pubsub_item.c.content_id).where(pubsub_item.c.content_id.is_not(None))
            ).scalars()
        )
        assert set(connection.execute(sa.select(pubsub_content.c.id)).scalars()) == referenced
        stored: dict[str, dict[str, str]] = {}
        for node, item_id, payload in connection.execute(query):
            stored.setdefault(node, {})[item_id] = payload
        counted = sa.select(pubsub_node.c.node, pubsub_node.c.item_count).where(
            pubsub_node.c.account == account
        )
        counts: dict[str, int] = {}
        for node, count in connection.execute(counted):
            counts[node] = count
    assert stored == {node: found for node, found in reference.items() if found}
    assert counts == {node: len(found) for node, found in reference.items() if node in counts}


def test_partitioned_projectors_build_the_same_read_model(
    engine: Engine, event_log: EventLog, tmp_path: object
) -> None:
    events = history()
    event_log.append(events)
    for index in range(3):
        partition = Partition(index, 3)
        projector = Projector(engine, registry=default_registry(), partition=partition)
        assert projector.name == f"main/{index}-of-3"
        projector.catch_up()
    single = create_engine(f"sqlite:///{tmp_path}/single.sqlite3")
    ensure_schema(single)
    EventLog(single).append(events)
    Projector(single, registry=default_registry()).catch_up()
    assert digest(engine) == digest(single)
    single.dispose()
