"""Each account in ``status`` (issue 13): its nodes by sync state, its items, and its events the
projector has not applied yet (how many, how old), beside its ingest's state; read from a real
log and read model on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, published
from pubsub_cache.events import Item, SyncCompleted, SyncFailed, SyncPageFetched, SyncStarted
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Partition, Projector
from pubsub_cache.projector.schema import ingest_account, ingest_lease
from pubsub_cache.projector.status import UNKNOWN, AccountStatus, read_status

JULIET = "juliet@capulet.lit"
BENVOLIO = "benvolio@montague.lit"
#: The instant status is read at; event ``p`` of the log was recorded at ``RECORDED + p``.
RECORDED = 1_000.0
NOW = 2_000.0


def romeo_syncs() -> list[Any]:
    """Romeo's two synced nodes: ``done`` COMPLETED with two items, ``broken`` ERROR."""
    done: dict[str, Any] = {"account": ACCOUNT, "service": SERVICE, "node": "done"}
    broken: dict[str, Any] = {"account": ACCOUNT, "service": SERVICE, "node": "broken"}
    items = [Item(id=i, payload=f"<p xmlns='urn:t'>{i}</p>") for i in ("a", "b")]
    return [
        SyncStarted(**done, observed_at=at(0), sync_id="s1"),
        SyncPageFetched(**done, observed_at=at(1), sync_id="s1", items=items),
        SyncCompleted(**done, observed_at=at(2), sync_id="s1", complete=True, item_count=2),
        SyncStarted(**broken, observed_at=at(3), sync_id="s2"),
        SyncFailed(**broken, observed_at=at(4), sync_id="s2", error="item-not-found"),
    ]


def stamp_log(engine: Engine) -> None:
    """Record every event at a known instant: position ``p`` at ``RECORDED + p``."""
    with engine.begin() as connection:
        connection.execute(
            event_table.update().values(recorded_at=RECORDED + event_table.c.position)
        )


def accounts(engine: Engine) -> dict[str, AccountStatus]:
    with engine.connect() as connection:
        return {account.account: account for account in read_status(connection, now=NOW).accounts}


def states(**counts: int) -> dict[str, int]:
    """Nodes by sync state: ``counts``, the other states 0."""
    return {"NONE": 0, "IN_PROGRESS": 0, "COMPLETED": 0, "PARTIAL": 0, "ERROR": 0, **counts}


def test_each_account_has_its_nodes_by_state_items_and_lag(
    engine: Engine, event_log: EventLog
) -> None:
    juliets = [published("x", account=JULIET, node="musings"), published("w", account=JULIET)]
    event_log.append([*romeo_syncs(), *juliets])  # 1..5 Romeo, 6..7 Juliet
    with engine.begin() as connection:
        connection.execute(
            ingest_account.insert(),
            [
                {"account": ACCOUNT, "owner": "h:1:t", "state": "connected",
                 "reason": None, "since": 5.0},
                {"account": BENVOLIO, "owner": "h:1:t", "state": "failed",
                 "reason": "not-authorized", "since": 7.0},
            ],
        )  # fmt: skip
        connection.execute(
            ingest_lease.insert(), {"account": ACCOUNT, "owner": "h:1:t", "expires": NOW + 30}
        )
    stamp_log(engine)
    # No projector has run: every event of each account waits, the oldest since position 1.
    before = accounts(engine)
    assert (before[ACCOUNT].lag_events, before[ACCOUNT].lag_seconds) == (5, NOW - RECORDED - 1)
    assert (before[JULIET].lag_events, before[JULIET].lag_seconds) == (2, NOW - RECORDED - 6)
    assert (before[ACCOUNT].nodes, before[ACCOUNT].items) == (states(), 0)

    projector = Projector(engine, registry=default_registry())
    projector.catch_up()
    event_log.append(
        [
            published("c", node="done"),  # 8
            published("y", account=JULIET, node="musings"),  # 9
            published("z", account=JULIET, node="musings"),  # 10
        ]
    )
    stamp_log(engine)
    with engine.connect() as connection:
        status = read_status(connection, now=NOW)
    found = {account.account: account for account in status.accounts}

    assert list(found) == [BENVOLIO, JULIET, ACCOUNT]  # by JID
    romeo, juliet, benvolio = found[ACCOUNT], found[JULIET], found[BENVOLIO]
    assert (romeo.state, romeo.since, romeo.owner) == ("connected", 5.0, "h:1:t")
    assert romeo.nodes == states(COMPLETED=1, ERROR=1)
    assert romeo.items == 2
    assert (romeo.lag_events, romeo.lag_seconds) == (1, NOW - RECORDED - 8)
    # Cached, with events, but no ingest daemon records it.
    assert (juliet.state, juliet.reason, juliet.since, juliet.owner) == (
        "unknown",
        UNKNOWN,
        None,
        None,
    )
    assert (juliet.nodes, juliet.items) == (states(NONE=2), 2)
    assert (juliet.lag_events, juliet.lag_seconds) == (2, NOW - RECORDED - 9)
    # Recorded by a daemon, nothing cached.
    assert (benvolio.state, benvolio.reason) == ("failed", "not-authorized")
    assert (benvolio.nodes, benvolio.items, benvolio.lag_events) == (states(), 0, 0)
    # The whole cache's figures are the accounts' added up.
    assert status.nodes == states(NONE=2, COMPLETED=1, ERROR=1)
    assert status.items == 4

    projector.catch_up()
    projector.release()
    after = accounts(engine)
    assert [(a.lag_events, a.lag_seconds) for a in after.values()] == [(0, 0.0)] * 3
    assert (after[ACCOUNT].items, after[JULIET].items) == (3, 4)


def test_an_account_lags_until_the_lowest_checkpoint_has_passed_its_events(
    engine: Engine, event_log: EventLog
) -> None:
    # Partition 1 of 2 stops at position 2; partition 0 reaches the head. The lag counts from
    # the lower one: an account is caught up when every partition has passed its events.
    event_log.append(
        [published(str(n), node=f"n{n}", account=(ACCOUNT, JULIET)[n % 2]) for n in range(6)]
    )
    stamp_log(engine)
    registry = default_registry()
    ahead = Projector(engine, registry=registry, partition=Partition(0, 2))
    ahead.catch_up()
    ahead.release()
    behind = Projector(engine, registry=registry, partition=Partition(1, 2), batch_size=1)
    assert behind.run_once().position == 1
    assert behind.run_once().position == 2
    behind.release()

    found = accounts(engine)
    # Positions 3..6 wait: 3 and 5 are Romeo's (n2, n4), 4 and 6 Juliet's (n3, n5).
    assert (found[ACCOUNT].lag_events, found[ACCOUNT].lag_seconds) == (2, NOW - RECORDED - 3)
    assert (found[JULIET].lag_events, found[JULIET].lag_seconds) == (2, NOW - RECORDED - 4)
    with engine.connect() as connection:
        lags = {p.name: p.lag_events for p in read_status(connection, now=NOW).checkpoints}
    assert lags == {"main/0-of-2": 0, "main/1-of-2": 4}
