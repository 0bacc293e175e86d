"""The projector: reads the log from its checkpoint and keeps the read model up to date.

Each batch is one transaction: take or renew the lease, read the events after the checkpoint,
apply them, advance the checkpoint, commit (invariant 2: a crash anywhere loses nothing and
applies nothing twice). If a batch fails, it is applied again one event at a time, each inside a
savepoint, and the events that still fail are parked (invariant 5). Database trouble (a lost
connection, a lock timeout) is not the events' fault: it propagates and the batch is retried.

On PostgreSQL several projectors may split the nodes: partition ``i`` of ``n`` applies the events
whose (account, service, node) hashes to ``i`` and keeps its own checkpoint and lease. Operator
commands that span nodes (``CachePurged``, ``CacheReset`` without both a service and a node) are
read by every partition, each applying them to the nodes it owns at the command's place in the
log: a partition never touches a node another partition may have moved past the command
(invariant 3; tests/storage/test_partitions.py).
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
import sqlalchemy as sa
from anyio.abc import TaskStatus
from sqlalchemy.engine import Connection, Engine

from pubsub_cache import telemetry
from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events import (
    AnyEvent,
    ItemsPublished,
    SyncPageFetched,
    UndecodableEvent,
    decode,
    event_scope,
)
from pubsub_cache.events.db import is_sqlite, write_transaction
from pubsub_cache.events.log import EventLog, RawRecord
from pubsub_cache.events.outage import UNAVAILABLE, Outage, exponential, first_line
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector import checkpoint, parking
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.apply import BatchApplier, NodeKey, OwnsNode
from pubsub_cache.projector.payloads import ParseCache
from pubsub_cache.projector.schema import LIVE, ReadModel

log = logging.getLogger(__name__)

#: Failures that say nothing about the events (the database is away or busy): the batch is
#: retried, never parked.
TRANSIENT = UNAVAILABLE

#: Encoded bytes a batch reads at most (beyond its first event), whatever its count: what
#: bounds the projector's and the replay's memory (decoded, parsed and buffered, a batch takes
#: a few times its encoded size).
BATCH_BYTES = 16 << 20


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of ``count`` (``0`` of ``1`` means every node)."""

    index: int = 0
    count: int = 1

    def owns(self, record: RawRecord) -> bool:
        """Whether this partition applies ``record`` (to some of its nodes at least)."""
        if self.count == 1 or not (record.service and record.node):
            return True  # every node, or a command spanning nodes
        return self.owns_node((record.account, record.service, record.node))

    def owns_node(self, key: NodeKey) -> bool:
        """Whether the node ``key`` (account, service, node) belongs to this partition."""
        if self.count == 1:
            return True
        return zlib.crc32("\0".join(key).encode()) % self.count == self.index

    @property
    def node_filter(self) -> OwnsNode | None:
        """What a :class:`BatchApplier` of this partition is given (``None``: every node)."""
        return None if self.count == 1 else self.owns_node

    def checkpoint_name(self, base: str) -> str:
        """The checkpoint row of this partition."""
        return base if self.count == 1 else f"{base}/{self.index}-of-{self.count}"

    @classmethod
    def of_checkpoint(cls, name: str) -> Partition:
        """The partition whose :meth:`checkpoint_name` is ``name`` (a whole projector's: 0 of 1)."""
        _base, _, suffix = name.rpartition("/")
        index, _, count = suffix.partition("-of-")
        if index.isdigit() and count.isdigit() and int(index) < int(count):
            return cls(int(index), int(count))
        return cls()


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
        batch_bytes: int = BATCH_BYTES,
        lease_seconds: float = 15.0,
        owner: str | None = None,
        tables: ReadModel = LIVE,
        log: EventLog | None = None,
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._registry = registry
        # N views of one public node get one payload N times: parsed once (items.py).
        self._parse_cache = ParseCache(derive_text=is_sqlite(engine))
        self.name = partition.checkpoint_name(name)
        self._partition = partition
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
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

    def run_once(self, *, upto: int | None = None) -> BatchResult:
        """Apply at most one batch (of events up to ``upto`` when given); says whether this
        projector holds the lease."""
        try:
            return self._batch(one_by_one=False, upto=upto)
        except TRANSIENT:
            raise
        except Exception:
            log.exception(
                "batch failed; applying it again one event at a time",
                extra={"projector": self.name},
            )
            return self._batch(one_by_one=True, upto=upto)

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
                            "projector caught up",
                            extra={"projector": self.name, "position": result.position},
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
                    log.warning(
                        "projector could not release its lease: %s",
                        first_line(exc),
                        extra={"projector": self.name},
                    )

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

    def apply_in(
        self,
        connection: Connection,
        *,
        after: int,
        upto: int,
        partition: Partition | None = None,
    ) -> tuple[int, int]:
        """Apply the events in (``after``, ``upto``] inside the caller's transaction, as batches
        would (parking what fails, byte-bounded reads), without touching any checkpoint.

        ``partition`` (default: this projector's) says which events and nodes; parked events
        are recorded under this projector's name. Returns (applied, parked).
        """
        partition = partition or self._partition
        applied = parked = 0
        now = time.time()
        while after < upto:
            records = read_batch(
                connection, after=after, upto=upto, limit=self._batch_size, size=self._batch_bytes
            )
            if not records:
                break
            savepoint = connection.begin_nested()
            try:
                batch = self._apply(connection, records, partition, one_by_one=False, now=now)
                savepoint.commit()
            except TRANSIENT:
                raise
            except Exception:
                savepoint.rollback()
                log.exception(
                    "range failed; applying it again one event at a time",
                    extra={"projector": self.name, "after": after, "upto": upto},
                )
                batch = self._apply(connection, records, partition, one_by_one=True, now=now)
            applied, parked = applied + batch.applied, parked + batch.parked
            after = records[-1].position
        return applied, parked

    def _batch(self, *, one_by_one: bool, upto: int | None) -> BatchResult:
        started, now = time.perf_counter(), time.time()
        with write_transaction(self._engine) as connection:
            position = checkpoint.acquire(
                connection, self.name, self.owner, ttl=self._lease_seconds, now=now
            )
            if position is None:
                return BatchResult(leader=False)
            records = read_batch(
                connection,
                after=position,
                upto=upto,
                limit=self._batch_size,
                size=self._batch_bytes,
            )
            if not records:
                return BatchResult(leader=True, position=position)
            batch = self._apply(
                connection, records, self._partition, one_by_one=one_by_one, now=now
            )
            last = records[-1].position
            checkpoint.advance(connection, self.name, last, now=now)
        counting = telemetry.current()
        if counting.enabled:  # once per batch, after the commit that made it visible
            applied_at = time.time()
            counting.projected(
                self.name,
                seconds=time.perf_counter() - started,
                events=batch.applied,
                items=batch.items,
                latencies=[applied_at - observed for observed in batch.published],
            )
            if batch.parked:
                counting.parked(self.name, batch.parked)
        return BatchResult(
            leader=True,
            read=len(records),
            applied=batch.applied,
            parked=batch.parked,
            position=last,
        )

    def _apply(
        self,
        connection: Connection,
        records: list[RawRecord],
        partition: Partition,
        *,
        one_by_one: bool,
        now: float,
    ) -> _Batch:
        batch = _Batch(connection, self.name, now, self._tables, partition.node_filter)
        todo = batch.admit(r for r in records if partition.owns(r))
        if one_by_one:
            for event_position, event in todo:
                batch.apply_alone(self._registry, event_position, event)
            return batch
        applier = BatchApplier(
            connection,
            self._registry,
            self._tables,
            owns=partition.node_filter,
            parse_cache=self._parse_cache,
        )
        applier.prefetch(event for _, event in todo)
        for event_position, event in todo:
            applier.apply(event_position, event)
        applier.finish()
        batch.applied = len(todo)
        if telemetry.current().enabled:
            batch.measure(event for _, event in todo)
        return batch


def read_batch(
    connection: Connection, *, after: int, limit: int, size: int, upto: int | None = None
) -> list[RawRecord]:
    """The rows above ``after`` (up to ``upto``), at most ``limit`` of them and, beyond the
    first, at most ``size`` bytes of encoded events in all.

    A count alone does not bound memory: one sync page may hold a thousand payloads (about a
    megabyte), so a batch of a thousand such events would take a gigabyte once decoded and
    parsed. The sizes are read first (``length`` of the stored bytes needs no payload: SQLite
    reads it from the record header, PostgreSQL from the TOAST pointer), then the rows that fit.
    """
    event = event_table.c
    window = event.position > after
    if upto is not None:
        window = sa.and_(window, event.position <= upto)
    sizes = connection.execute(
        sa.select(event.position, sa.func.length(event.body))
        .where(window)
        .order_by(event.position)
        .limit(limit)
    )
    last, total = None, 0
    for position, length in sizes:
        total += int(length or 0)
        if last is not None and total > size:
            break
        last = position
    if last is None:
        return []
    rows = connection.execute(
        sa.select(*event_table.c)
        .where(event.position > after, event.position <= last)
        .order_by(event.position)
    )
    return [RawRecord(*row) for row in rows]


class _Batch:
    """The parking side of one batch: which events may be applied, which must wait."""

    def __init__(
        self,
        connection: Connection,
        projector: str,
        now: float,
        tables: ReadModel,
        owns: OwnsNode | None = None,
    ) -> None:
        self._connection = connection
        self._tables = tables
        self._owns = owns
        self._projector = projector
        self._now = now
        self._blocked = parking.parked_scopes(connection, projector)
        self.applied = 0
        self.parked = 0
        self.items = 0
        """Items applied, published or synced (counted for the telemetry only)."""
        self.published: list[float] = []
        """When each publication applied was observed (Unix time; for the telemetry only)."""

    def measure(self, events: Iterable[AnyEvent]) -> None:
        """Count the items ``events`` (applied) brought, published or synced, and note when
        each publication was seen."""
        for event in events:
            if isinstance(event, ItemsPublished):
                self.items += len(event.items)
                self.published.append(event.observed_at.timestamp())
            elif isinstance(event, SyncPageFetched):
                self.items += len(event.items)

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
            applier = BatchApplier(self._connection, registry, self._tables, owns=self._owns)
            applier.apply(position, event)
            applier.finish()
            savepoint.commit()
            self.applied += 1
        except TRANSIENT:
            raise
        except Exception as exc:
            savepoint.rollback()
            error = f"{type(exc).__name__}: {exc}"
            account, service, node = scope
            log.error(
                "parked an event: %s",
                error,
                extra={
                    "projector": self._projector,
                    "position": position,
                    "account": account,
                    "service": service,
                    "node": node,
                },
            )
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
