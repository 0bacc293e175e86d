"""The ingest's ordered writers: every event reaches the log in the order its account saw it.

Producers never wait: the notification handler (inside slixmpp's receive path), syncs and payload
fetches call :meth:`EventWriter.submit` synchronously, which only queues. One task appends:
when idle it appends what arrived at once; under load, events queue while an append runs in its
worker thread, and the next append takes everything queued (group commit), so the database sees
few large transactions instead of many small ones.

A daemon serving many accounts gives each account its own :class:`EventWriter` (its own queue,
its own order) from one :class:`GroupCommit` (one append task): a publication fanned out to 200
subscribed accounts is then a few transactions, not 200 contending for the database. The order
kept is per account (each account's view is its own); the accounts' queues are taken side by
side, so a slot held by one account (below) never holds back another's events.

A reply whose events are not known yet (a sync page, a fetched payload) keeps its place with
:meth:`EventWriter.reserve`, called the moment the reply arrives (``OnResult`` in
:mod:`.pubsub`); the writer appends nothing of its account behind a reserved slot until it is
filled. Without it, a retraction notified just after a page was served would be logged before
that page, and the item would come back.

A failed append (database down, lock timeout) is retried with backoff, forever while running,
with one warning per outage (:mod:`pubsub_cache.events.outage`); what arrives meanwhile waits in
the queues, in order. On shutdown (:meth:`GroupCommit.close`, or :meth:`EventWriter.close` for
one account that stops) what is queued is appended for up to ``shutdown_timeout`` seconds, but
a failed append is not retried (a stop must not wait for the database to come back); what could
not be appended is logged as lost, with its count.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

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
    """A place in a writer's queue, kept for events that are not known yet."""

    __slots__ = ("events",)

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events = events


class GroupCommit:
    """Appends the queues of its writers (:meth:`writer`), everything ready in one transaction
    of at most ``max_batch`` events; see the module docstring."""

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
        self.shutdown_timeout = shutdown_timeout
        # (the ``log`` parameter hides the module logger here)
        self._outage = Outage("event writer", logging.getLogger(__name__), delay=self._retry.delay)
        self._writers: list[EventWriter] = []
        self._next = 0  # the writer taken first by the next append: each its turn to be first
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._resting = False  # between a failed append and its retry
        self._alone = 0  # appends to make of one writer's events only (finding a bad one)
        self.failures = 0
        """Appends failed so far (each retried, unless stopping)."""
        self.appended = 0
        """Events appended so far, all writers together."""
        self.batches = 0
        """Appends (transactions) so far."""

    def writer(self) -> EventWriter:
        """A new queue (one account's), appended by this group's task."""
        return EventWriter(self._log, commit=self)

    @property
    def pending(self) -> int:
        """Entries (submissions and slots) of every writer not appended yet."""
        return sum(writer.pending for writer in self._writers)

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
                    delay = await self._write_ready()
                if delay is not None:
                    await self._rest(delay)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        """Flush every writer for up to ``shutdown_timeout`` seconds, or until an append fails
        (the database is away: no retry at shutdown); log what could not be appended."""
        with anyio.move_on_after(self.shutdown_timeout):
            await self._wait(lambda: self.pending == 0, give_up=True)
        if self.pending:
            _log_lost(self._writers)

    def _attach(self, writer: EventWriter) -> None:
        self._writers.append(writer)

    async def _detach(self, writer: EventWriter) -> None:
        # Once no append is running (the lock), none holds this writer's entries: what is still
        # queued is never appended, and nothing of the account comes after this.
        async with self._lock:
            if writer in self._writers:
                self._writers.remove(writer)

    def _signal(self) -> None:
        self._wake.set()
        self._progress.set()
        self._progress = anyio.Event()

    def _ready(self) -> bool:
        return any(writer._ready() for writer in self._writers)

    async def _wait(self, done: Callable[[], bool], *, give_up: bool) -> None:
        # Until ``done()`` (or, to ``give_up``, until an append fails: a stop does not wait for
        # the database); appends by itself when no task does (no run(), or run() cancelled).
        failures = self.failures
        while not done() and not (give_up and self.failures > failures):
            progress = self._progress
            if not self._lock.locked() and not self._resting and self._ready():
                async with self._lock:
                    delay = await self._write_ready()
                if delay is not None and not give_up:
                    await self._rest(delay)
            else:
                await progress.wait()

    async def _rest(self, delay: float) -> None:
        # Between a failed append and its retry: nobody appends (flushes wait for the retry).
        self._resting = True
        try:
            await anyio.sleep(delay)
        finally:
            self._resting = False
            self._signal()

    async def _write_ready(self) -> float | None:
        """Append what is ready; on a failure, put it back and return the delay before the
        retry. The caller holds the lock: one append at a time keeps each writer's order."""
        while self._ready():
            taken = self._take()
            batch = [event for _, slots in taken for slot in slots for event in slot.events or ()]
            if not batch:  # slots filled with nothing
                self._done(taken, [])
                continue
            try:
                # Shielded: an append that committed must be seen to commit, or it would be
                # appended a second time by the flush that follows a cancellation.
                with anyio.CancelScope(shield=True):
                    positions = await anyio.to_thread.run_sync(self._log.append, batch)
            except RETRYABLE as exc:
                _put_back(taken)  # in front, in order: the retry takes them first
                delay = self._outage.failed(exc)
                self.failures += 1
                self._signal()
                log.debug("appending %d events failed, retrying in %.1f s", len(batch), delay)
                return delay
            except Exception:
                if len(self._writers) == 1:
                    _put_back(taken)
                    raise  # its own writer's bug: the ingest fails (events are checked when built)
                if len(taken) > 1:  # one account's bug must not stop the others: each alone
                    _put_back(taken)
                    self._alone = len(taken)
                    continue
                log.exception(
                    "%d events of one account dropped: they cannot be appended", len(batch)
                )
                positions = []
            self._outage.ended()
            self._done(taken, positions)
        return None

    def _take(self) -> list[tuple[EventWriter, list[Slot]]]:
        taken: list[tuple[EventWriter, list[Slot]]] = []
        size = 0
        writers = self._writers[self._next :] + self._writers[: self._next]
        self._next = (self._next + 1) % max(1, len(self._writers))
        alone, self._alone = self._alone > 0, max(0, self._alone - 1)
        for writer in writers:
            slots: list[Slot] = []
            while writer._ready() and (size == 0 or size < self._max_batch):
                slot = writer._queue.popleft()
                slots.append(slot)
                size += len(slot.events or ())
            if slots:
                taken.append((writer, slots))
            if size >= self._max_batch or (alone and taken):
                break
        return taken

    def _done(self, taken: list[tuple[EventWriter, list[Slot]]], positions: list[int]) -> None:
        if positions:
            self.batches += 1
            self.appended += len(positions)
        at = 0
        for writer, slots in taken:
            count = sum(len(slot.events or ()) for slot in slots)
            writer._written += len(slots)
            if count and positions:  # (no positions: dropped)
                writer.appended += count
                writer.batches += 1
                writer.last_position = positions[at + count - 1]
            at += count
        self._signal()


class EventWriter:
    """Appends submitted events to ``log`` in submission order, by its own :class:`GroupCommit`
    (:meth:`run`) or by a shared one (``commit``: :meth:`GroupCommit.writer`)."""

    def __init__(
        self,
        log: EventLog,
        *,
        max_batch: int = 1000,
        retry: Backoff | None = None,
        shutdown_timeout: float = 30.0,
        commit: GroupCommit | None = None,
    ) -> None:
        self.shared = commit is not None
        """Appended by a group shared with other writers, which runs and closes it."""
        self._commit = commit or GroupCommit(
            log, max_batch=max_batch, retry=retry, shutdown_timeout=shutdown_timeout
        )
        self._queue: deque[Slot] = deque()
        self._closed = False
        self._submitted = 0
        self._written = 0
        self.appended = 0
        """Events appended so far."""
        self.batches = 0
        """Appends (transactions) holding some of these events so far."""
        self.last_position = 0
        """The log position of the last event appended."""
        self._commit._attach(self)

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
        self._commit._signal()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Append what is submitted until cancelled, then flush what is queued (bounded)."""
        if self.shared:
            raise RuntimeError("a shared writer is run by its GroupCommit")
        await self._commit.run(task_status=task_status)

    async def flush(self) -> None:
        """Return once everything submitted or reserved before the call is appended."""
        target = self._submitted
        await self._commit._wait(lambda: self._written >= target, give_up=False)

    async def close(self) -> None:
        """Flush for up to ``shutdown_timeout`` seconds, or until an append fails (the database
        is away: no retry at shutdown); log what could not be appended. A shared writer is then
        left by its group (nothing more of it is appended); the others go on."""
        if self._closed:
            return
        self._closed = True
        if not self.shared:
            await self._commit.close()
            return
        target = self._submitted
        with anyio.move_on_after(self._commit.shutdown_timeout):
            await self._commit._wait(lambda: self._written >= target, give_up=True)
        with anyio.CancelScope(shield=True):
            await self._commit._detach(self)
        if self.pending:
            _log_lost([self])

    def _enqueue(self, slot: Slot) -> None:
        self._queue.append(slot)
        self._submitted += 1
        self._commit._signal()

    def _ready(self) -> bool:
        return bool(self._queue) and self._queue[0].events is not None


def _put_back(taken: list[tuple[EventWriter, list[Slot]]]) -> None:
    for writer, slots in taken:
        writer._queue.extendleft(reversed(slots))


def _log_lost(writers: Sequence[EventWriter]) -> None:
    lost = sum(len(slot.events or ()) for writer in writers for slot in writer._queue)
    unfilled = sum(slot.events is None for writer in writers for slot in writer._queue)
    log.error(
        "event writer stopping with %d events not appended (%d reserved slots never "
        "filled); nodes they touch are re-read at the next start",
        lost,
        unfilled,
    )
