"""``replay`` on a split deployment (issue 10, point 2): verify is read-only and compares with
the live model at its own checkpoints; a rebuild leaves nothing behind (or is shown apart and
removable); the swap's final catch-up parks what fails and serves every partition; a live
projector that is behind costs no second pass over the log."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, at, published, retracted
from pubsub_cache.events import CachePurged, CacheReset, Event
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, NodeInfo, default_registry
from pubsub_cache.projector.apply import BatchApplier
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.parking import list_parked
from pubsub_cache.projector.rebuild import Rebuild, discard_rebuild
from pubsub_cache.projector.runner import Partition, Projector
from pubsub_cache.projector.schema import parked_event, projector_checkpoint, pubsub_item
from pubsub_cache.projector.status import read_status

NODES = [f"n{index}" for index in range(8)]


def history() -> list[Event]:
    """Items on 8 nodes, a purge of every node, more items, retracts, a reset of one node."""
    events: list[Event] = [published(f"old-{node}", node=node) for node in NODES]
    events.append(CachePurged(account=ACCOUNT, observed_at=at(1)))
    events += [published(f"new-{node}", f"x-{node}", node=node, when=2) for node in NODES]
    events += [retracted(f"x-{node}", node=node, when=3) for node in NODES[:4]]
    events.append(CacheReset(account=ACCOUNT, observed_at=at(4), service=None, node=None))
    events += [published(f"last-{node}", node=node, when=5) for node in NODES]
    return events


def split(engine: Engine, registry: AnalyserRegistry | None = None) -> list[Projector]:
    return [
        Projector(engine, registry=registry or default_registry(), partition=Partition(i, 2))
        for i in range(2)
    ]


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything verify must leave as it found it."""
    with engine.connect() as connection:
        return {
            "digest": read_model_digest(connection),
            "checkpoints": connection.execute(
                sa.select(projector_checkpoint).order_by(projector_checkpoint.c.name)
            ).all(),
            "parked": connection.execute(sa.select(parked_event)).all(),
            "tables": sorted(sa.inspect(connection).get_table_names()),
        }


def leftovers(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        names = sa.inspect(connection).get_table_names()
        rows = connection.execute(sa.select(projector_checkpoint.c.name)).scalars()
        parked = connection.execute(
            sa.select(parked_event.c.position).where(parked_event.c.projector == "rebuild")
        ).all()
    return (
        [n for n in names if n.startswith(("rebuild_", "retired_"))]
        + [n for n in rows if n == "rebuild"]
        + [f"parked {p}" for (p,) in parked]
    )


def test_verify_compares_each_partition_at_its_own_checkpoint_and_changes_nothing(
    engine: Engine, event_log: EventLog
) -> None:
    events = history()
    event_log.append(events[:17])
    first, second = split(engine)
    first.catch_up()
    second.catch_up()
    event_log.append(events[17:])
    first.catch_up()  # partition 0 is ahead, partition 1 stands where it was
    event_log.append([published("unapplied", node="n0", when=9)])  # nobody applied it
    before = snapshot(engine)
    rebuild = Rebuild(engine, default_registry(), batch_size=5, verify=True)
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    result = rebuild.finish(swap=False, verify=True)
    assert result.identical
    assert result.exit_status == 0
    assert result.checkpoints == {"main/0-of-2": len(events), "main/1-of-2": 17}
    assert snapshot(engine) == before
    assert leftovers(engine) == []


@pytest.mark.parametrize("flag", [True, False], ids=["verify-mode", "built-to-the-head"])
def test_verify_finds_a_live_model_that_differs(
    engine: Engine, event_log: EventLog, flag: bool
) -> None:
    event_log.append(history())
    first, second = split(engine)
    first.catch_up()
    second.catch_up()
    with engine.begin() as connection:  # what the partition-0 purge used to do to new items
        connection.execute(pubsub_item.delete().where(pubsub_item.c.item_id == "last-n3"))
    before = snapshot(engine)
    # Without ``verify`` (the CLI before it passed the flag) the shadow is built to the head,
    # past both live checkpoints: finish builds it again up to them.
    event_log.append([published("later", node="n1", when=9)])
    rebuild = Rebuild(engine, default_registry(), verify=flag)
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    result = rebuild.finish(swap=False, verify=True)
    assert not result.identical
    assert result.exit_status == 3
    assert snapshot(engine) == before
    assert leftovers(engine) == []


def test_a_rebuild_is_shown_apart_while_begun_and_leaves_nothing_once_finished(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append(history())
    Projector(engine, registry=default_registry()).catch_up()
    begun = Rebuild(engine, default_registry(), batch_size=4)
    begun.prepare(fresh=True)
    begun._projector.run_once()  # then interrupted
    with engine.connect() as connection:
        status = read_status(connection)
    assert [point.name for point in status.checkpoints] == ["main"]
    assert status.rebuild is not None
    assert status.rebuild.position == 4
    discard_rebuild(engine)
    assert leftovers(engine) == []
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare()
    rebuild.catch_up()
    assert rebuild.finish(swap=True, verify=False).swapped
    rebuild.clean_up()
    assert leftovers(engine) == []
    with engine.connect() as connection:
        status = read_status(connection)
    assert status.rebuild is None
    assert [(p.name, p.lag_events) for p in status.checkpoints] == [("main", 0)]


class Poison:
    """Fails to classify the node named "poison"."""

    def __call__(self, info: NodeInfo) -> tuple[str | None, str | None]:
        if info.node == "poison":
            raise RuntimeError("cannot classify the poison node")
        return None, None


def poisoned() -> AnalyserRegistry:
    registry = AnalyserRegistry()
    registry.register(Analyser(name="poisoned", classify=Poison()))
    return registry


def test_the_swap_parks_what_fails_and_serves_every_partition(
    engine: Engine, event_log: EventLog
) -> None:
    events = history()
    event_log.append(events)
    first, second = split(engine, poisoned())
    first.catch_up()
    rebuild = Rebuild(engine, poisoned())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    # Arrive after the rebuild caught up, and partition 0 applies them: the swap's final
    # catch-up brings the rebuilt model there, parking as a batch would.
    late = [published("p1", node="poison"), published("late", node="n2")]
    late.append(published("p2", node="poison"))
    event_log.append(late)
    first.catch_up()
    result = rebuild.finish(swap=True, verify=False)
    head = event_log.head()
    assert result.swapped
    assert result.checkpoints == {"main/0-of-2": head, "main/1-of-2": head}
    rebuild.clean_up()
    owner = next(p for p in (first, second) if p._partition.owns_node((ACCOUNT, *SCOPE)))
    with engine.connect() as connection:
        parked = [(row.projector, row.position) for row in list_parked(connection)]
    assert parked == [(owner.name, head - 2), (owner.name, head)]
    assert leftovers(engine) == []
    event_log.append([published("after", node=node, when=9) for node in NODES])
    first.catch_up()
    second.catch_up()
    check = Rebuild(engine, poisoned(), verify=True)
    check.prepare(fresh=True)
    check.catch_up()
    assert check.finish(swap=False, verify=True).identical


SCOPE = ("pubsub.capulet.lit", "poison")


def test_a_live_projector_behind_costs_no_second_pass(
    engine: Engine, event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_log.append(history())  # as after `log import`: no projector has applied anything
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    applied: list[int] = []
    apply = BatchApplier.apply

    def counted(self: BatchApplier, position: int, event: Any) -> None:
        applied.append(position)
        apply(self, position, event)

    monkeypatch.setattr(BatchApplier, "apply", counted)
    event_log.append([published("late", node="n1", when=9)])
    assert rebuild.finish(swap=True, verify=False).swapped
    assert applied == []  # the live tables, about to be replaced, were left alone
    Projector(engine, registry=default_registry()).catch_up()
    assert applied == [event_log.head()]  # the live checkpoint was moved with the swap
