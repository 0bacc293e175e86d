"""The ingest's single ordered writer: every event reaches the log in the order it was seen.

Producers never wait: the notification handler (inside slixmpp's receive path), syncs and payload
fetches call :meth:`EventWriter.submit` synchronously, which only queues. One task appends:
when idle it appends what arrived at once; under load, events queue while an append runs in its
worker thread, and the next append takes everything queued (group commit), so the database sees
few large transactions instead of many small ones.

A reply whose events are not known yet (a sync page, a fetched payload) keeps its place with
:meth:`EventWriter.reserve`, called the moment the reply arrives (``OnResult`` in
:mod:`.pubsub`); the writer appends nothing behind a reserved slot until it is filled. Without
it, a retraction notified just after a page was served would be logged before that page, and
the item would come back.

A failed append (database down, lock timeout) is retried with backoff, forever while running,
with one warning per outage (:mod:`pubsub_cache.events.outage`); what arrives meanwhile waits in
the queue, in order. On shutdown, what is queued is appended for up to ``shutdown_timeout``
seconds, but a failed append is not retried (a stop must not wait for the database to come
back); what could not be appended is logged as lost, with its count.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Sequence

import anyio
import anyio.abc
import anyio.to_thread
import sqlalchemy as sa

from pubsub_cache.events.db import DatabaseUnavailable
from pubsub_cache.events.log import AppendTimeout, EventLog
from pubsub_cache.events.outage import Outage
from pubsub_cache.events.types import Event

from .backoff import Backoff

log = logging.getLogger(__name__)

#: Errors after which the same append is tried again: the database may come back.
RETRYABLE = (sa.exc.DBAPIError, AppendTimeout, DatabaseUnavailable)


class Slot:
    """A place in the writer's queue, kept for events that are not known yet."""

    __slots__ = ("events",)

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events = events


class EventWriter:
    """Appends submitted events to ``log`` in submission order, in batches of at most
    ``max_batch`` events."""

    def __init__(
        self,
        log: EventLog,
        *,
        max_batch: int = 1000,
        retry: Backoff | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self._log = log
        self._max_batch = max_batch
        self._retry = retry or Backoff(initial=0.1, cap=5.0)
        self._shutdown_timeout = shutdown_timeout
        # (the ``log`` parameter hides the module logger here)
        self._outage = Outage("event writer", logging.getLogger(__name__), delay=self._retry.delay)
        self._closing = False
        self._queue: deque[Slot] = deque()
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._submitted = 0
        self._written = 0
        self.appended = 0
        """Events appended so far."""
        self.batches = 0
        """Appends (transactions) so far."""
        self.last_position = 0
        """The log position of the last event appended."""

    @property
    def pending(self) -> int:
        """Entries (submissions and slots) not appended yet."""
        return self._submitted - self._written

    def submit(self, events: Sequence[Event]) -> None:
        """Queue ``events`` behind everything submitted or reserved before; never blocks."""
        if events:
            self._enqueue(Slot(list(events)))

    def reserve(self) -> Slot:
        """Keep a place for events to come; :meth:`fill` it (with ``[]`` if nothing came)."""
        slot = Slot()
        self._enqueue(slot)
        return slot

    def fill(self, slot: Slot, events: Sequence[Event]) -> None:
        """Put ``events`` in their reserved place; filling a slot twice is a bug."""
        if slot.events is not None:
            raise RuntimeError("this writer slot was already filled")
        slot.events = list(events)
        self._signal()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Append what is submitted until cancelled, then flush what is queued (bounded)."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                async with self._lock:
                    await self._write_ready()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def flush(self) -> None:
        """Return once everything submitted or reserved before the call is appended."""
        target = self._submitted
        while self._written < target:
            progress = self._progress
            if not self._lock.locked() and self._ready():
                async with self._lock:
                    await self._write_ready()
            else:
                await progress.wait()

    async def close(self) -> None:
        """Flush for up to ``shutdown_timeout`` seconds, or until an append fails (the database
        is away: no retry at shutdown); log what could not be appended."""
        self._closing = True
        with anyio.move_on_after(self._shutdown_timeout), contextlib.suppress(_GaveUp):
            await self.flush()
        if self.pending:
            lost = sum(len(slot.events or ()) for slot in self._queue)
            unfilled = sum(slot.events is None for slot in self._queue)
            log.error(
                "event writer stopping with %d events not appended (%d reserved slots never "
                "filled); nodes they touch are re-read at the next start",
                lost,
                unfilled,
            )

    def _enqueue(self, slot: Slot) -> None:
        self._queue.append(slot)
        self._submitted += 1
        self._signal()

    def _signal(self) -> None:
        self._wake.set()
        self._progress.set()
        self._progress = anyio.Event()

    def _ready(self) -> bool:
        return bool(self._queue) and self._queue[0].events is not None

    async def _write_ready(self) -> None:
        # The caller holds the lock: one append at a time keeps the log in submission order.
        while self._ready():
            taken: list[Slot] = []
            batch: list[Event] = []
            while self._ready() and (not batch or len(batch) < self._max_batch):
                slot = self._queue.popleft()
                taken.append(slot)
                batch.extend(slot.events or ())
            try:
                positions = await self._append(batch) if batch else []
            except BaseException:
                self._queue.extendleft(reversed(taken))  # cancelled while waiting to retry
                raise
            self._written += len(taken)
            self.appended += len(batch)
            if positions:
                self.batches += 1
                self.last_position = positions[-1]
            self._signal()

    async def _append(self, batch: list[Event]) -> list[int]:
        while True:
            try:
                # Shielded: an append that committed must be seen to commit, or it would be
                # appended a second time by the flush that follows a cancellation.
                with anyio.CancelScope(shield=True):
                    positions = await anyio.to_thread.run_sync(self._log.append, batch)
            except RETRYABLE as exc:
                delay = self._outage.failed(exc)
                if self._closing:
                    # Stopping: waiting for the database would hold up the stop for as long as
                    # the outage lasts. close() says what is lost (nodes re-read at next start).
                    raise _GaveUp from exc
                log.debug("appending %d events failed, retrying in %.1f s", len(batch), delay)
                await anyio.sleep(delay)
                continue
            self._outage.ended()
            return positions


class _GaveUp(Exception):
    """Raised inside :meth:`EventWriter.close` when an append fails: no retry at shutdown."""
