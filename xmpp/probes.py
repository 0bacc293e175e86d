"""The probe board: one reconciliation probe per node for all the accounts of one process.

After a publication on a synced node whose ``max_items`` the cache does not know, each
account's :class:`~.reconcile.Reconciler` probes: one ``<items>`` request naming the few oldest
item ids its view caches. A public node subscribed by 200 accounts of one daemon receives 200
notifications for one publication, and its service would receive 200 probes asking mostly the
same ids. Whether an item exists on a service does not depend on who asks (an account that
could not read an item would not have it cached), so a probe that found every id it asked for
says "ids X of (service, node) existed when the request was sent, at t". That answers every
account whose own probe would ask a subset of X, provided t comes after the notification the
account reacted to (its *trigger*): the service sent that notification after the publication
and the evictions it made, so a request sent once it was received sees the node after them.

So the board, shared by the reconcilers of one process (:class:`~.accounts.IngestPool`):

- answers a probe from a result whose request was sent after the probe's trigger and asked
  for every id the probe asks for (kept :attr:`ProbeBoard.keep` seconds);
- lets a probe join a request in flight that meets the same rule (it awaits the reply);
- never shares an error or a result missing one of the ids it asked for (an eviction, perhaps,
  or a server leaving out what it will not show): the probes that joined it send their own,
  and their reconciler carries on as without the board (its own view decides what to log).

Times are :func:`time.monotonic` readings in this process; a trigger is taken when the
notification handler runs, a request's time just before it is sent. One board serves one event
loop (the daemon's): it holds no lock. The rule is pinned by ``tests/unit/test_probe_board.py``,
the fan-out on a real server by ``tests/xmpp/test_probes.py``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import anyio

from .directory import NodeRef

#: Sends the probe's request; returns the ids the service still holds among those asked.
Send = Callable[[], Awaitable[Iterable[str]]]

#: Results kept per node at most (accounts whose views differ ask for different ids).
PER_NODE = 8


class ProbeAnswer(NamedTuple):
    """What a probe learned: whether every id asked for is still there, and whether that
    came from another account's request (``shared``)."""

    there: bool
    shared: bool


@dataclass(eq=False)
class _Request:
    asked: frozenset[str]
    sent_at: float
    done: anyio.Event = field(default_factory=anyio.Event)
    there: bool = False
    """Set before ``done``: every id asked for was found (the only result shared)."""


class ProbeBoard:
    """Probe results of one process, shared by its accounts; see the module docstring."""

    def __init__(self, *, keep: float = 60.0) -> None:
        self.keep = keep
        """Seconds a result stays usable: a check later than that probes for itself."""
        self.sent = 0
        """Probe requests sent through the board."""
        self.shared = 0
        """Probes answered by a request another probe sent."""
        # Oldest first, a node moved to the end whenever a request of it is sent.
        self._requests: OrderedDict[NodeRef, list[_Request]] = OrderedDict()

    async def probe(
        self, ref: NodeRef, item_ids: Sequence[str], *, trigger: float, send: Send
    ) -> ProbeAnswer:
        """Whether every one of ``item_ids`` is still on ``ref``'s service, as seen after
        ``trigger`` (a :func:`time.monotonic` reading): from a request sent after it that asked
        for all of them, or else from ``send()``. Errors of ``send()`` are raised."""
        asked = frozenset(item_ids)
        joined = self._match(ref, asked, trigger)
        if joined is not None:
            await joined.done.wait()
            if joined.there:
                self.shared += 1
                return ProbeAnswer(there=True, shared=True)
        # Nothing to share, or what we waited for failed or missed an id: our own request.
        request = _Request(asked, time.monotonic())
        self._add(ref, request)
        self.sent += 1
        try:
            found = frozenset(await send())
            request.there = asked <= found
            return ProbeAnswer(there=request.there, shared=False)
        finally:  # also when cancelled: whoever joined sends its own
            if not request.there:
                self._remove(ref, request)
            request.done.set()

    def _match(self, ref: NodeRef, asked: frozenset[str], trigger: float) -> _Request | None:
        now = time.monotonic()
        self._expire(now)
        for request in reversed(self._requests.get(ref, ())):
            fresh = not request.done.is_set() or now - request.sent_at < self.keep
            if fresh and request.sent_at > trigger and asked <= request.asked:
                return request
        return None

    def _add(self, ref: NodeRef, request: _Request) -> None:
        requests = self._requests.setdefault(ref, [])
        requests.append(request)
        self._requests.move_to_end(ref)
        done = [r for r in requests if r.done.is_set()]
        for old in done[: max(0, len(done) - PER_NODE)]:
            requests.remove(old)

    def _remove(self, ref: NodeRef, request: _Request) -> None:
        requests = self._requests.get(ref)
        if requests is not None and request in requests:
            requests.remove(request)
            if not requests:
                del self._requests[ref]

    def _expire(self, now: float) -> None:
        # The least recently probed nodes first; stop at the first one still of use.
        while self._requests:
            ref, requests = next(iter(self._requests.items()))
            requests[:] = [
                r for r in requests if not r.done.is_set() or now - r.sent_at < self.keep
            ]
            if requests:
                return
            del self._requests[ref]
