"""The probe board's rule (xmpp/probes.py): a probe is answered by another's request only when
that request was sent after the probe's trigger and asked for every id the probe asks for, and
only when it found them all; errors, "gone" results and cancelled requests are never shared.
The same board on a real server, with many accounts: tests/xmpp/test_probes.py."""

from __future__ import annotations

import time
from collections.abc import Iterable

import anyio
import pytest

from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.errors import XmppRequestError
from pubsub_cache.xmpp.probes import ProbeAnswer, ProbeBoard, Send

pytestmark = pytest.mark.anyio

NODE = NodeRef("pubsub.example.org", "news")
OTHER = NodeRef("pubsub.example.org", "other")
THERE = ProbeAnswer(there=True, shared=False)
SHARED = ProbeAnswer(there=True, shared=True)
GONE = ProbeAnswer(there=False, shared=False)


class Service:
    """The items a node holds, and the probe requests it received; ``fail`` makes the next
    request answer an error, ``gate`` holds replies until it is set."""

    def __init__(self, *holds: str) -> None:
        self.holds = set(holds)
        self.requests: list[list[str]] = []
        self.gate: anyio.Event | None = None
        self.fail = False
        self.received = anyio.Event()

    def send(self, item_ids: list[str]) -> Send:
        async def send() -> Iterable[str]:
            self.requests.append(item_ids)
            self.received.set()
            fail, self.fail = self.fail, False
            if self.gate is not None:
                await self.gate.wait()
            if fail:
                raise XmppRequestError(
                    "get items by id",
                    service=NODE.service,
                    node=NODE.node,
                    condition="internal-server-error",
                )
            return [item_id for item_id in item_ids if item_id in self.holds]

        return send


def earlier() -> float:
    """A trigger handled a second ago: before any request these tests send."""
    return time.monotonic() - 1.0


async def probe(
    board: ProbeBoard, service: Service, item_ids: list[str], trigger: float, ref: NodeRef = NODE
) -> ProbeAnswer:
    return await board.probe(ref, item_ids, trigger=trigger, send=service.send(item_ids))


async def test_a_result_answers_only_the_triggers_before_its_request() -> None:
    board, service = ProbeBoard(), Service("a", "b", "c", "d")
    before = earlier()
    assert await probe(board, service, ["a", "b", "c"], before) == THERE

    # Notified before the request was sent: its answer holds, a subset of it too.
    assert await probe(board, service, ["a", "b", "c"], before) == SHARED
    assert await probe(board, service, ["b", "c"], before) == SHARED
    # Notified after it: the request may have missed the publication's evictions.
    assert await probe(board, service, ["a", "b", "c"], time.monotonic()) == THERE
    # An id it did not ask for, or another node: not answered.
    assert await probe(board, service, ["a", "b", "d"], before) == THERE
    assert await probe(board, service, ["a", "b", "c"], before, OTHER) == THERE

    assert len(service.requests) == 4
    assert (board.sent, board.shared) == (4, 2)


async def test_probes_of_one_node_share_the_request_in_flight() -> None:
    board, service = ProbeBoard(), Service("a", "b", "c")
    service.gate = anyio.Event()
    answers: list[ProbeAnswer] = []
    before = earlier()

    async def run(item_ids: list[str], trigger: float) -> None:
        answers.append(await probe(board, service, item_ids, trigger))

    async with anyio.create_task_group() as group:
        group.start_soon(run, ["a", "b", "c"], before)
        await service.received.wait()
        for _ in range(5):
            group.start_soon(run, ["a", "b", "c"], before)
        group.start_soon(run, ["b"], before)
        await anyio.wait_all_tasks_blocked()
        assert len(service.requests) == 1
        # Notified once the request was on its way: it waits for nothing, asks for itself.
        group.start_soon(run, ["a", "b", "c"], time.monotonic())
        await anyio.wait_all_tasks_blocked()
        assert len(service.requests) == 2
        service.gate.set()

    assert sorted(answers) == sorted([THERE, THERE] + [SHARED] * 6)
    assert (board.sent, board.shared) == (2, 6)


@pytest.mark.parametrize("outcome", ["gone", "error", "cancelled"])
async def test_a_request_that_did_not_find_every_id_is_not_shared(outcome: str) -> None:
    board, service = ProbeBoard(), Service("b", "c")  # "a" was evicted
    service.gate = anyio.Event()
    service.fail = outcome == "error"
    before = earlier()
    first: list[ProbeAnswer | BaseException] = []
    waiters: list[ProbeAnswer] = []

    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            try:
                first.append(await probe(board, service, ["a", "b", "c"], before))
            except XmppRequestError as exc:
                first.append(exc)

    async def wait(item_ids: list[str]) -> None:
        waiters.append(await probe(board, service, item_ids, before))

    async with anyio.create_task_group() as group:
        group.start_soon(lead)
        await service.received.wait()
        group.start_soon(wait, ["a", "b", "c"])
        group.start_soon(wait, ["b", "c"])
        await anyio.wait_all_tasks_blocked()
        assert len(service.requests) == 1  # they joined the request in flight
        if outcome == "cancelled":
            leader.cancel()
        service.gate.set()

    # Each sent its own request and got its own answer; none was shared.
    assert len(service.requests) == 3
    assert sorted(waiters) == sorted([GONE, THERE])
    assert board.shared == 0
    if outcome == "gone":
        assert first == [GONE]
    elif outcome == "error":
        [error] = first
        assert isinstance(error, XmppRequestError)
    else:
        assert first == []


async def test_a_result_is_kept_for_keep_seconds_only() -> None:
    board, service = ProbeBoard(keep=0.0), Service("a", "b")
    before = earlier()
    assert await probe(board, service, ["a", "b"], before) == THERE
    assert await probe(board, service, ["a", "b"], before) == THERE  # expired: asked again
    assert board.shared == 0
    assert len(service.requests) == 2
