"""Blue/green rebuild of the read model from position 0 (``pubsub-cache replay``).

The log is applied by an ordinary :class:`~pubsub_cache.projector.runner.Projector` writing to
shadow tables (``rebuild_*``) under its own checkpoint (``rebuild``), while the live projector
keeps serving the live tables. Interrupting it (Ctrl-C, kill -9) leaves the live model untouched;
running it again resumes from the rebuild checkpoint. Once caught up, one transaction locks the
live checkpoint, brings both models to the same position, and either compares their digests
(``verify``) or copies the shadow rows over the live ones and moves the live checkpoint: readers
see the old model until that commit and the new one after it. This is how a new parser version is
applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.events import decode
from pubsub_cache.events.db import is_sqlite, write_transaction
from pubsub_cache.events.log import head_in, read_raw_in
from pubsub_cache.projector import checkpoint
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.apply import BatchApplier
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.runner import NotLeader, Projector
from pubsub_cache.projector.schema import (
    LIVE,
    SHADOW_PREFIX,
    ReadModel,
    parked_event,
    projector_checkpoint,
    shadow_read_model,
)

REBUILD = "rebuild"
Progress = Callable[[int, int], None]
"""Called as ``progress(position, head)`` after every batch."""


@dataclass(frozen=True)
class RebuildResult:
    """How a rebuild ended."""

    position: int
    live_digest: str | None
    rebuilt_digest: str | None
    swapped: bool

    @property
    def identical(self) -> bool:
        """Whether the rebuilt model equals the live one (when both digests were taken)."""
        return self.live_digest == self.rebuilt_digest


class Rebuild:
    """One rebuild of the read model of ``engine`` with ``registry``'s analysers and parsers."""

    def __init__(
        self,
        engine: Engine,
        registry: AnalyserRegistry,
        *,
        live: str = "main",
        batch_size: int = 1000,
        lease_seconds: float = 10.0,
    ) -> None:
        self._lease_seconds = lease_seconds
        self._engine = engine
        self._registry = registry
        self._live = live
        self._shadow = shadow_read_model(engine.dialect.name)
        self._projector = Projector(
            engine,
            registry=registry,
            name=REBUILD,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            tables=self._shadow,
        )

    def prepare(self, *, fresh: bool = False) -> int:
        """Create the shadow tables (emptied when ``fresh``); returns the position to resume at."""
        tables = [self._shadow.node, self._shadow.item, self._shadow.counter]
        drop_retired(self._engine)  # left by a swap interrupted before its clean-up
        with write_transaction(self._engine) as connection:
            for table in tables:
                table.create(connection, checkfirst=True)
            if fresh:
                _empty(connection, self._shadow)
                checkpoint.reset(connection, REBUILD)
                connection.execute(parked_event.delete().where(parked_event.c.projector == REBUILD))
            position = connection.execute(
                sa.select(projector_checkpoint.c.position).where(
                    projector_checkpoint.c.name == REBUILD
                )
            ).scalar()
        return int(position or 0)

    def catch_up(self, progress: Progress | None = None) -> int:
        """Apply the log to the shadow tables up to the head; returns the position reached."""
        waited_since: float | None = None
        while True:
            result = self._projector.run_once()
            if not result.leader:
                # Another replay, or one killed recently whose lease has not expired yet.
                waited_since = waited_since or time.monotonic()
                if time.monotonic() - waited_since > 2 * self._lease_seconds:
                    raise NotLeader(REBUILD)
                time.sleep(min(1.0, self._lease_seconds / 4))
                continue
            if result.read == 0:
                return result.position
            if progress is not None:
                progress(result.position, self._projector_head())

    def finish(self, *, swap: bool, verify: bool) -> RebuildResult:
        """Bring both models to one position, then compare and/or swap, in one transaction."""
        with write_transaction(self._engine) as connection:
            live_position = _lock_checkpoint(connection, self._live)
            shadow_position = _lock_checkpoint(connection, REBUILD)
            target = max(live_position, shadow_position)
            # The live projector waits on the checkpoint row we hold; nothing moves meanwhile.
            _apply_range(connection, self._registry, self._shadow, shadow_position, target)
            _apply_range(connection, self._registry, LIVE, live_position, target)
            live_digest = rebuilt_digest = None
            if verify:
                live_digest = read_model_digest(connection)
                rebuilt_digest = read_model_digest(connection, tables=_as_dict(self._shadow))
                swap = swap and live_digest == rebuilt_digest
            if swap and is_sqlite(connection):
                _rename_swap(connection, self._shadow)
            elif swap:
                _copy(connection, self._shadow, LIVE)
            if swap:
                now = time.time()
                checkpoint.advance(connection, self._live, target, now=now)
                checkpoint.reset(connection, REBUILD)
                # The rebuilt model's parked events replace the old model's.
                connection.execute(
                    parked_event.delete().where(parked_event.c.projector == self._live)
                )
                connection.execute(
                    parked_event.update()
                    .where(parked_event.c.projector == REBUILD)
                    .values(projector=self._live)
                )
                if not is_sqlite(connection):
                    for table in (self._shadow.item, self._shadow.counter, self._shadow.node):
                        table.drop(connection)
            else:
                checkpoint.advance(connection, REBUILD, target, now=time.time())
        self._projector.release()
        return RebuildResult(target, live_digest, rebuilt_digest, swap)

    def clean_up(self) -> None:
        """Drop what a swap retired (the old model): slow for big tables, so done after it."""
        drop_retired(self._engine)

    def discard(self) -> None:
        """Drop the shadow tables and the rebuild checkpoint (after a dry run)."""
        with write_transaction(self._engine) as connection:
            for table in (self._shadow.item, self._shadow.counter, self._shadow.node):
                table.drop(connection, checkfirst=True)
            checkpoint.reset(connection, REBUILD)
            connection.execute(parked_event.delete().where(parked_event.c.projector == REBUILD))

    def shadow_digest(self) -> str:
        """The digest of the shadow tables as they stand."""
        with self._engine.connect() as connection:
            return read_model_digest(connection, tables=_as_dict(self._shadow))

    def _projector_head(self) -> int:
        with self._engine.connect() as connection:
            return head_in(connection)


def _as_dict(tables: ReadModel) -> dict[str, sa.Table]:
    return {
        "pubsub_node": tables.node,
        "pubsub_item": tables.item,
        "pubsub_counter": tables.counter,
    }


def _lock_checkpoint(connection: Connection, name: str) -> int:
    insert = (
        sa.dialects.postgresql.insert if not is_sqlite(connection) else sa.dialects.sqlite.insert
    )
    connection.execute(
        insert(projector_checkpoint).values(name=name, position=0).on_conflict_do_nothing()
    )
    query = sa.select(projector_checkpoint.c.position).where(projector_checkpoint.c.name == name)
    if not is_sqlite(connection):  # SQLite's BEGIN IMMEDIATE already excludes other writers
        query = query.with_for_update()
    return int(connection.execute(query).scalar_one())


def _apply_range(
    connection: Connection, registry: AnalyserRegistry, tables: ReadModel, after: int, upto: int
) -> None:
    while after < upto:
        records = [
            r for r in read_raw_in(connection, after=after, limit=1000) if r.position <= upto
        ]
        if not records:
            return
        applier = BatchApplier(connection, registry, tables)
        for record in records:
            applier.apply(record.position, decode(record.body, position=record.position))
        applier.finish()
        after = records[-1].position


def _empty(connection: Connection, tables: ReadModel) -> None:
    for table in (tables.item, tables.counter, tables.node):
        connection.execute(table.delete())


def _copy(connection: Connection, source: ReadModel, target: ReadModel) -> None:
    """PostgreSQL: replace the live rows by the shadow ones (MVCC keeps readers on the old)."""
    _empty(connection, target)
    for origin, destination in (
        (source.node, target.node),
        (source.item, target.item),
        (source.counter, target.counter),
    ):
        names = [column.name for column in destination.c]
        connection.execute(
            destination.insert().from_select(names, sa.select(*(origin.c[n] for n in names)))
        )
    for table in (target.node, target.item):
        connection.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
        )


RETIRED_PREFIX = "retired_"


def _rename_swap(connection: Connection, shadow: ReadModel) -> None:
    """SQLite: rename the shadow tables into place; the live ones are retired, dropped later.

    Deleting or copying the rows costs as much as building them (each row spans overflow
    pages); a rename costs nothing. The live tables' indexes and search triggers are read back,
    moved to the new tables from their own SQL, and the search index is rebuilt in one pass.
    """
    live = [t.name.removeprefix(SHADOW_PREFIX) for t in (shadow.node, shadow.item, shadow.counter)]
    kept = connection.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND sql IS NOT NULL AND tbl_name IN (?, ?, ?)",
        tuple(live),
    ).all()
    for kind, name, _sql in kept:
        connection.exec_driver_sql(f'DROP {kind.upper()} "{name}"')
    for name in live:
        connection.exec_driver_sql(f'ALTER TABLE "{name}" RENAME TO "{RETIRED_PREFIX}{name}"')
    shadow_indexes = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN (?, ?, ?)",
        tuple(SHADOW_PREFIX + name for name in live),
    ).scalars()
    for name in list(shadow_indexes):
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    for name in live:  # the parent first: its children's foreign keys follow the rename
        connection.exec_driver_sql(f'ALTER TABLE "{SHADOW_PREFIX}{name}" RENAME TO "{name}"')
    for _kind, _name, sql in kept:
        connection.exec_driver_sql(sql)
    fts = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE name = 'pubsub_item_fts'"
    ).scalar()
    if fts:
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('rebuild')"
        )


def drop_retired(engine: Engine) -> None:
    """Drop the tables a SQLite swap retired (slow for big tables, so after the swap)."""
    with write_transaction(engine) as connection:
        for name in ("pubsub_counter", "pubsub_item", "pubsub_node"):
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{RETIRED_PREFIX}{name}"')
