"""The sync scheduler and its backoff, with a fake sync function (no server, no database)."""

from __future__ import annotations

import random

import anyio
import pytest

from pubsub_cache.xmpp.backoff import Backoff
from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.scheduler import SyncScheduler
from pubsub_cache.xmpp.sync import SyncResult, SyncState

pytestmark = pytest.mark.anyio

A = NodeRef("pubsub.example.org", "a")
B = NodeRef("pubsub.example.org", "b")


def result(ref: NodeRef, state: SyncState) -> SyncResult:
    return SyncResult(service=ref.service, node=ref.node, sync_id="s", state=state)


def test_backoff_grows_exponentially_up_to_its_cap_and_jitters_below_it() -> None:
    steady = Backoff(initial=1, factor=2, cap=10, jitter=0)
    assert [steady.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert steady.delay(10_000) == 10

    jittery = Backoff(initial=1, factor=2, cap=10, jitter=0.5, rng=random.Random(4))
    delays = [jittery.delay(4) for _ in range(200)]
    assert all(4 <= delay <= 8 for delay in delays)
    assert len(set(delays)) > 100


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError, match="unusable"):
        Backoff(initial=10, cap=1)


class FakeSyncs:
    """Records calls; each call returns the next state scripted for its node."""

    def __init__(self, script: dict[NodeRef, list[SyncState]]) -> None:
        self.script = script
        self.calls: list[NodeRef] = []
        self.gate: anyio.Event | None = None

    async def __call__(self, ref: NodeRef) -> SyncResult:
        self.calls.append(ref)
        if self.gate is not None:
            await self.gate.wait()
        states = self.script.get(ref, [])
        return result(ref, states.pop(0) if states else "COMPLETED")


async def test_requests_for_a_queued_node_are_merged() -> None:
    syncs = FakeSyncs({})
    scheduler = SyncScheduler(concurrency=1)
    for _ in range(3):
        scheduler.request(A, "test")
    scheduler.request(B, "test")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            await scheduler.wait_idle()
            group.cancel_scope.cancel()

    assert syncs.calls == [A, B]
    assert scheduler.results[A].state == "COMPLETED"


async def test_a_request_during_a_sync_runs_it_once_more_afterwards() -> None:
    syncs = FakeSyncs({})
    syncs.gate = anyio.Event()
    scheduler = SyncScheduler(concurrency=2)
    scheduler.request(A, "first")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            await anyio.sleep(0.01)
            scheduler.request(A, "again")
            scheduler.request(A, "and again")
            syncs.gate.set()
            await anyio.sleep(0.01)
            await scheduler.wait_idle()
            group.cancel_scope.cancel()

    assert syncs.calls == [A, A]


async def test_an_error_is_retried_with_backoff_until_it_succeeds() -> None:
    syncs = FakeSyncs({A: ["ERROR", "ERROR", "COMPLETED"], B: ["DELETED"]})
    scheduler = SyncScheduler(concurrency=2, retry=Backoff(initial=0.05, cap=0.1, jitter=0))
    scheduler.request(A, "test")
    scheduler.request(B, "test")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            while scheduler.results.get(A) != result(A, "COMPLETED"):
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()

    assert syncs.calls.count(A) == 3
    assert syncs.calls.count(B) == 1  # a node that is gone is not retried


async def test_a_sync_interrupted_by_the_end_of_a_session_is_first_at_the_next() -> None:
    syncs = FakeSyncs({})
    syncs.gate = anyio.Event()
    scheduler = SyncScheduler(concurrency=1)
    scheduler.request(A, "test")
    scheduler.request(B, "test")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            await anyio.sleep(0.01)
            group.cancel_scope.cancel()  # the session ended while A ran
        assert scheduler.busy
        syncs.gate.set()
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            await scheduler.wait_idle()
            group.cancel_scope.cancel()

    assert syncs.calls == [A, A, B]


async def test_forget_drops_a_queued_node() -> None:
    syncs = FakeSyncs({})
    scheduler = SyncScheduler(concurrency=1)
    scheduler.request(A, "test")
    scheduler.request(B, "test")
    scheduler.forget(A)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, syncs)
            await scheduler.wait_idle()
            group.cancel_scope.cancel()

    assert syncs.calls == [B]
