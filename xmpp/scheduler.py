"""Which node to sync next: a de-duplicated queue, a few workers, and retries with backoff.

A node is in at most one of: queued, running, waiting for a retry. A request for a node that is
running marks it to run once more afterwards (the request may have been made because of
something the running sync started too early to see). A sync that ends in ERROR is retried
after a backoff that grows with each failure of that node, and resets once it succeeds.

The queue outlives sessions: :meth:`SyncScheduler.run` serves it while a session is up, and a
sync interrupted by the end of its session goes back to the front of the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from .backoff import Backoff
from .directory import NodeRef
from .sync import SyncResult

log = logging.getLogger(__name__)

SyncFunction = Callable[[NodeRef], Awaitable[SyncResult]]


class SyncScheduler:
    """Runs requested syncs, at most ``concurrency`` at a time, retrying failed ones."""

    def __init__(self, *, concurrency: int = 4, retry: Backoff | None = None) -> None:
        self._concurrency = concurrency
        self._retry = retry or Backoff(initial=5.0, cap=300.0)
        self._queue: dict[NodeRef, str] = {}  # insertion-ordered: the next sync comes first
        self._running: set[NodeRef] = set()
        self._again: set[NodeRef] = set()
        self._attempts: dict[NodeRef, int] = {}
        self._retry_at: dict[NodeRef, float] = {}
        self._changed = anyio.Event()
        self.results: dict[NodeRef, SyncResult] = {}
        """The last result of each node synced."""

    @property
    def busy(self) -> bool:
        """Whether a sync is queued or running (retries waiting for their time do not count)."""
        return bool(self._queue or self._running)

    def syncing(self, ref: NodeRef) -> bool:
        """Whether a sync of ``ref`` is queued or running."""
        return ref in self._queue or ref in self._running

    def request(self, ref: NodeRef, reason: str) -> None:
        """Sync ``ref`` as soon as a worker is free (now, even if a retry was waiting)."""
        self._retry_at.pop(ref, None)
        if ref in self._running:
            self._again.add(ref)
        elif ref not in self._queue:
            self._queue[ref] = reason
            log.debug("sync queued (%s)", reason, extra={"service": ref.service, "node": ref.node})
        self._signal()

    def forget(self, ref: NodeRef) -> None:
        """Drop what is queued or scheduled for ``ref`` (a running sync ends by itself)."""
        self._queue.pop(ref, None)
        self._again.discard(ref)
        self._retry_at.pop(ref, None)
        self._attempts.pop(ref, None)

    async def run(
        self,
        sync: SyncFunction,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the queue with ``sync`` until cancelled (the end of a session)."""
        async with anyio.create_task_group() as group:
            for _ in range(self._concurrency):
                group.start_soon(self._worker, sync)
            group.start_soon(self._retry_timer)
            task_status.started()

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running."""
        while self.busy:
            changed = self._changed
            await changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _worker(self, sync: SyncFunction) -> None:
        while True:
            while not self._queue:
                await self._changed.wait()
            ref = next(iter(self._queue))
            reason = self._queue.pop(ref)
            self._running.add(ref)
            try:
                result = await sync(ref)
            except BaseException:
                # Interrupted (the session ended): first in line at the next session.
                self._queue = {ref: reason, **self._queue}
                raise
            finally:
                self._running.discard(ref)
                self._signal()
            self._record(ref, result)

    def _record(self, ref: NodeRef, result: SyncResult) -> None:
        self.results[ref] = result
        if ref in self._again:
            self._again.discard(ref)
            self.request(ref, "requested again while it ran")
        elif result.retry:
            attempt = self._attempts.get(ref, 0) + 1
            self._attempts[ref] = attempt
            delay = self._retry.delay(attempt)
            self._retry_at[ref] = time.monotonic() + delay
            log.info(
                "sync will be retried in %.1f s (failure %d)",
                delay,
                attempt,
                extra={"service": ref.service, "node": ref.node},
            )
        else:
            self._attempts.pop(ref, None)
        self._signal()

    async def _retry_timer(self) -> None:
        while True:
            now = time.monotonic()
            for ref, when in list(self._retry_at.items()):
                if when <= now:
                    self.request(ref, "retry after an error")
            await anyio.sleep(0.25 if self._retry_at else 1.0)
