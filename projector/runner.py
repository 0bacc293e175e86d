"""The projector: reads the log from its checkpoint and keeps the read model up to date.

Each batch is one transaction: take or renew the lease, read the events after the checkpoint,
apply them, advance the checkpoint, commit (invariant 2: a crash anywhere loses nothing and
applies nothing twice). If a batch fails, it is applied again one event at a time, each inside a
savepoint, and the events that still fail are parked (invariant 5). Database trouble (a lost
connection, a lock timeout) is not the events' fault: it propagates and the batch is retried.

On PostgreSQL several projectors may split the nodes: partition ``i`` of ``n`` applies the events
whose (account, service, node) hashes to ``i`` and keeps its own checkpoint and lease. Operator
commands that span nodes are applied by partition 0.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events import AnyEvent, UndecodableEvent, decode, event_scope
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog, RawRecord, read_raw_in
from pubsub_cache.events.outage import UNAVAILABLE, Outage, exponential, first_line
from pubsub_cache.projector import checkpoint, parking
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.apply import BatchApplier
from pubsub_cache.projector.schema import LIVE, ReadModel

log = logging.getLogger(__name__)

#: Failures that say nothing about the events (the database is away or busy): the batch is
#: retried, never parked.
TRANSIENT = UNAVAILABLE


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of ``count`` (``0`` of ``1`` means every node)."""

    index: int = 0
    count: int = 1

    def owns(self, record: RawRecord) -> bool:
        """Whether this partition applies ``record``."""
        if self.count == 1:
            return True
        if not record.service and not record.node:
            return self.index == 0
        scope = f"{record.account}\0{record.service}\0{record.node}".encode()
        return zlib.crc32(scope) % self.count == self.index

    def checkpoint_name(self, base: str) -> str:
        """The checkpoint row of this partition."""
        return base if self.count == 1 else f"{base}/{self.index}-of-{self.count}"


@dataclass(frozen=True)
class BatchResult:
    """What one call of :meth:`Projector.run_once` did."""

    leader: bool
    read: int = 0
    """Events read past the checkpoint (including other partitions')."""
    applied: int = 0
    parked: int = 0
    position: int = 0


class Projector:
    """Applies the log to the read model; one per checkpoint (or partition)."""

    def __init__(
        self,
        engine: Engine,
        *,
        registry: AnalyserRegistry,
        name: str = "main",
        partition: Partition = Partition(),
        batch_size: int = 500,
        lease_seconds: float = 15.0,
        owner: str | None = None,
        tables: ReadModel = LIVE,
        log: EventLog | None = None,
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._registry = registry
        self.name = partition.checkpoint_name(name)
        self._partition = partition
        self._batch_size = batch_size
        self._lease_seconds = lease_seconds
        self.owner = owner or checkpoint.new_owner()
        # Sharing the appender's EventLog (the daemon's ingest) wakes the projector at once
        # after an append in this process, instead of at the next poll.
        self._log = log or EventLog(engine)
        self._owns_log = log is None
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()

    @property
    def engine(self) -> Engine:
        """The database the projector reads and writes."""
        return self._engine

    def run_once(self) -> BatchResult:
        """Apply at most one batch; says whether this projector holds the lease."""
        try:
            return self._batch(one_by_one=False)
        except TRANSIENT:
            raise
        except Exception:
            log.exception("batch failed; applying it again one event at a time")
            return self._batch(one_by_one=True)

    def catch_up(self) -> int:
        """Apply batches until the log is exhausted; returns how many events were applied."""
        total = 0
        while True:
            result = self.run_once()
            if not result.leader:
                raise NotLeader(self.name)
            total += result.applied + result.parked
            if result.read == 0:
                return total

    async def run(
        self,
        *,
        idle_timeout: float = 1.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow the log until cancelled; ``task_status.started()`` once first caught up.

        A database outage, however long, is waited out with backoff (one warning when it
        begins, one line when it ends), whether it strikes a batch or the wait for new events.
        A batch in progress when cancelled is finished and committed (the worker thread is
        waited for); the lease is released on the way out.
        """
        started = False
        wait = min(idle_timeout, self._lease_seconds / 3)
        outage = Outage(f"projector {self.name}", log, delay=exponential(0.5, 30.0))
        try:
            while True:
                try:
                    result = await anyio.to_thread.run_sync(self.run_once)
                    if result.read:
                        outage.ended()
                        continue
                    if not started:
                        task_status.started()
                        started = True
                        log.info(
                            "projector %s caught up at position %d", self.name, result.position
                        )
                    if result.leader:
                        # Reads the head: an outage that begins while we are idle shows here.
                        await anyio.to_thread.run_sync(
                            functools.partial(self._wait, after=result.position, timeout=wait),
                            abandon_on_cancel=True,
                        )
                    else:
                        await anyio.sleep(wait)
                    outage.ended()
                except TRANSIENT as exc:
                    # Nothing was applied (a batch commits whole or not at all): try again later.
                    await anyio.sleep(outage.failed(exc))
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self.release)
                except TRANSIENT as exc:
                    log.warning("projector %s: could not release its lease: %s",
                                self.name, first_line(exc))  # fmt: skip

    def _wait(self, *, after: int, timeout: float) -> None:
        # Runs in a worker thread that cancellation abandons: release() stops and joins it,
        # so that it never touches the database once the caller has moved on.
        self._idle.clear()
        try:
            self._log.wait(after=after, timeout=timeout, stop=self._stop)
        finally:
            self._idle.set()

    def release(self) -> None:
        """Give up the lease (at shutdown) and close the log's listener."""
        self._stop.set()
        self._idle.wait(timeout=5)
        self._stop.clear()
        try:
            with write_transaction(self._engine) as connection:
                checkpoint.release(connection, self.name, self.owner)
        finally:
            if self._owns_log:
                self._log.close()

    def _batch(self, *, one_by_one: bool) -> BatchResult:
        now = time.time()
        with write_transaction(self._engine) as connection:
            position = checkpoint.acquire(
                connection, self.name, self.owner, ttl=self._lease_seconds, now=now
            )
            if position is None:
                return BatchResult(leader=False)
            records = read_raw_in(connection, after=position, limit=self._batch_size)
            if not records:
                return BatchResult(leader=True, position=position)
            batch = _Batch(connection, self.name, now, self._tables)
            todo = batch.admit(r for r in records if self._partition.owns(r))
            if one_by_one:
                for event_position, event in todo:
                    batch.apply_alone(self._registry, event_position, event)
            else:
                applier = BatchApplier(connection, self._registry, self._tables)
                applier.prefetch(event for _, event in todo)
                for event_position, event in todo:
                    applier.apply(event_position, event)
                applier.finish()
                batch.applied = len(todo)
            last = records[-1].position
            checkpoint.advance(connection, self.name, last, now=now)
        return BatchResult(
            leader=True,
            read=len(records),
            applied=batch.applied,
            parked=batch.parked,
            position=last,
        )


class _Batch:
    """The parking side of one batch: which events may be applied, which must wait."""

    def __init__(
        self, connection: Connection, projector: str, now: float, tables: ReadModel
    ) -> None:
        self._connection = connection
        self._tables = tables
        self._projector = projector
        self._now = now
        self._blocked = parking.parked_scopes(connection, projector)
        self.applied = 0
        self.parked = 0

    def admit(self, records: Iterable[RawRecord]) -> list[tuple[int, AnyEvent]]:
        """The decodable events of nodes with nothing parked; the others are parked."""
        todo = []
        for record in records:
            scope = (record.account, record.service, record.node)
            if self._wait_behind(record.position, scope):
                continue
            try:
                todo.append((record.position, decode(record.body, position=record.position)))
            except UndecodableEvent as exc:
                self._park(record.position, scope, str(exc))
        return todo

    def apply_alone(self, registry: AnalyserRegistry, position: int, event: AnyEvent) -> None:
        """Apply one event in a savepoint; park it if it fails."""
        scope = (event.account, *event_scope(event))
        if self._wait_behind(position, scope):
            return
        savepoint = self._connection.begin_nested()
        try:
            applier = BatchApplier(self._connection, registry, self._tables)
            applier.apply(position, event)
            applier.finish()
            savepoint.commit()
            self.applied += 1
        except TRANSIENT:
            raise
        except Exception as exc:
            savepoint.rollback()
            error = f"{type(exc).__name__}: {exc}"
            log.error("parked the event at position %d of %s: %s", position, scope, error)
            self._park(position, scope, error)

    def _wait_behind(self, position: int, scope: parking.Scope) -> bool:
        first = self._blocked.get(scope)
        if first is None:
            return False
        parking.park(
            self._connection,
            self._projector,
            position,
            scope,
            f"waiting behind the parked event at position {first}",
            now=self._now,
        )
        self.parked += 1
        return True

    def _park(self, position: int, scope: parking.Scope, error: str) -> None:
        parking.park(self._connection, self._projector, position, scope, error, now=self._now)
        self._blocked[scope] = position
        self.parked += 1


class NotLeader(PubsubCacheError):
    """Raised by :meth:`Projector.catch_up` when another projector holds the lease."""

    def __init__(self, name: str) -> None:
        super().__init__(f"another projector holds the lease on checkpoint {name!r}")
