"""Blue/green rebuild of the read model from position 0 (``pubsub-cache replay``).

The log is applied by an ordinary :class:`~pubsub_cache.projector.runner.Projector` writing to
shadow tables (``rebuild_*``) under its own checkpoint (``rebuild``), while the live projectors
keep serving the live tables. Interrupting it (Ctrl-C, kill -9) leaves the live model untouched;
running it again resumes from the rebuild checkpoint; ``status`` shows it as a rebuild (never as
a lagging projector) and :meth:`Rebuild.discard` removes it. A finished rebuild leaves nothing.

The live model may be one projector (checkpoint ``main``) or partitions (``main/i-of-n``), each
at its own position. Then either:

- **swap**: one transaction locks the live checkpoints, brings the shadow to the furthest of
  them (parking what fails, as a batch would), swaps the tables and moves every live checkpoint
  there, handing each partition the rebuild's parked events of its nodes. The live tables are
  never written: they are about to be replaced (no double work after ``log import``);
- **verify**: the shadow is built up to the lowest live position, then, in one transaction that
  is rolled back, brought to each partition's own position for that partition's nodes and
  compared with the live model (digests); the shadow is then discarded. No live row and no
  checkpoint changes (tests/storage/test_rebuild_verify.py).

This is how a new parser version is applied.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events.db import WRITE, is_sqlite, write_transaction
from pubsub_cache.events.log import head_in
from pubsub_cache.projector import checkpoint
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.runner import BATCH_BYTES, NotLeader, Partition, Projector
from pubsub_cache.projector.schema import (
    ACCOUNT_FILL,
    LIVE,
    SHADOW_PREFIX,
    ReadModel,
    item_key_select,
    parked_event,
    projector_checkpoint,
    pubsub_item_key,
    shadow_read_model,
)
from pubsub_cache.projector.status import REBUILD

Progress = Callable[[int, int], None]
"""Called as ``progress(position, head)`` after every batch."""

#: Exit status of a verify that found a difference (DESIGN.md, "Exit statuses").
EXIT_DIFFERENT = 3

log = logging.getLogger(__name__)


class MixedCheckpoints(PubsubCacheError):
    """Raised when the live checkpoints mix partition schemes: which one to compare with?"""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            "the live checkpoints mix partition schemes, cannot tell which built the read "
            f"model: {', '.join(names)}"
        )


@dataclass(frozen=True)
class RebuildResult:
    """How a rebuild ended."""

    position: int
    """The position both models stood at (the furthest live checkpoint when they differ)."""
    live_digest: str | None
    rebuilt_digest: str | None
    swapped: bool
    checkpoints: dict[str, int] = field(default_factory=dict)
    """The live checkpoints compared with (verify) or moved (swap), and their positions."""

    @property
    def identical(self) -> bool:
        """Whether the rebuilt model equals the live one (when both digests were taken)."""
        return self.live_digest == self.rebuilt_digest

    @property
    def exit_status(self) -> int:
        """0, or :data:`EXIT_DIFFERENT` when a verify found the models different."""
        return 0 if self.identical else EXIT_DIFFERENT


class Rebuild:
    """One rebuild of the read model of ``engine`` with ``registry``'s analysers and parsers.

    With ``verify``, :meth:`catch_up` stops at the live model's lowest checkpoint, so that
    :meth:`finish` can compare at the live positions without rebuilding anything twice.
    """

    def __init__(
        self,
        engine: Engine,
        registry: AnalyserRegistry,
        *,
        live: str = "main",
        batch_size: int = 1000,
        batch_bytes: int = BATCH_BYTES,
        lease_seconds: float = 10.0,
        verify: bool = False,
    ) -> None:
        self._lease_seconds = lease_seconds
        self._engine = engine
        self._registry = registry
        self._live = live
        self._verify = verify
        self._shadow = shadow_read_model(engine.dialect.name)
        self._projector = Projector(
            engine,
            registry=registry,
            name=REBUILD,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            lease_seconds=lease_seconds,
            tables=self._shadow,
        )

    def prepare(self, *, fresh: bool = False) -> int:
        """Create the shadow tables (emptied when ``fresh``); returns the position to resume at."""
        tables = [self._shadow.node, self._shadow.content, self._shadow.item, self._shadow.counter]
        drop_retired(self._engine)  # left by a swap interrupted before its clean-up
        with write_transaction(self._engine) as connection:
            for table in tables:
                table.create(connection, checkfirst=True)
            if fresh:
                _empty(connection, self._shadow)
                checkpoint.reset(connection, REBUILD)
                connection.execute(parked_event.delete().where(parked_event.c.projector == REBUILD))
            return _position(connection, REBUILD)

    def catch_up(self, progress: Progress | None = None) -> int:
        """Apply the log to the shadow tables up to the head (with ``verify``: up to the lowest
        live checkpoint); returns the position reached."""
        waited_since: float | None = None
        while True:
            upto = None
            if self._verify:
                with self._engine.connect() as connection:
                    upto = min(_live_positions(connection, self._live).values())
            result = self._projector.run_once(upto=upto)
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
        """Compare with the live model (``verify``: nothing is swapped, the rebuild is
        discarded) or swap the rebuilt model in (``swap``)."""
        if verify:
            return self._compare()
        if not swap:  # nothing asked: keep the rebuild to resume or swap later
            with self._engine.connect() as connection:
                position = _position(connection, REBUILD)
            self._projector.release()
            return RebuildResult(position, None, None, False)
        with write_transaction(self._engine) as connection:
            self._renew(connection)
            live = _live_positions(connection, self._live, lock=True)
            shadow_position = _position(connection, REBUILD)
            target = max(shadow_position, *live.values())
            # The live projectors wait on the checkpoint rows we hold; nothing moves meanwhile.
            self._projector.apply_in(connection, after=shadow_position, upto=target)
            if is_sqlite(connection):
                _rename_swap(connection, self._shadow)
            else:
                _copy(connection, self._shadow, LIVE)
            now = time.time()
            for name in live:
                checkpoint.ensure(connection, name)
                checkpoint.advance(connection, name, target, now=now)
            _hand_over_parked(connection, list(live))
            checkpoint.reset(connection, REBUILD)
            if not is_sqlite(connection):
                for table in _drop_order(self._shadow):
                    table.drop(connection)
        self._projector.release()
        return RebuildResult(target, None, None, True, dict.fromkeys(live, target))

    def _compare(self) -> RebuildResult:
        with self._engine.connect() as connection:
            live = _live_positions(connection, self._live)
            ahead = _position(connection, REBUILD) > min(live.values())
        if ahead:
            # Built past a live checkpoint (not prepared with ``verify``): no going back.
            log.warning("the rebuild went past the live model: rebuilding up to it again")
            self._verify = True
            self.prepare(fresh=True)
            self.catch_up()
        connection = self._engine.connect().execution_options(**{WRITE: True})
        if not is_sqlite(connection):
            # One snapshot for the live checkpoints and rows (they commit together): the live
            # projectors are not held up; only this transaction writes the shadow tables.
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection:
            transaction = connection.begin()
            try:
                self._renew(connection)
                live = _live_positions(connection, self._live)
                shadow_position = _position(connection, REBUILD)
                for name, position in live.items():
                    self._projector.apply_in(
                        connection,
                        after=shadow_position,
                        upto=position,
                        partition=_partition_of(name, self._live),
                    )
                live_digest = read_model_digest(connection)
                rebuilt_digest = read_model_digest(connection, tables=_as_dict(self._shadow))
            finally:
                transaction.rollback()  # verify changes nothing, not even the shadow
        self.discard()
        self._projector.release()
        return RebuildResult(max(live.values()), live_digest, rebuilt_digest, False, live)

    def clean_up(self) -> None:
        """Drop what a swap retired (the old model): slow for big tables, so done after it."""
        drop_retired(self._engine)

    def discard(self) -> None:
        """Drop the shadow tables, the rebuild checkpoint and its parked events."""
        discard_rebuild(self._engine)

    def shadow_digest(self) -> str:
        """The digest of the shadow tables as they stand."""
        with self._engine.connect() as connection:
            return read_model_digest(connection, tables=_as_dict(self._shadow))

    def _renew(self, connection: Connection) -> None:
        projector = self._projector
        now = time.time()
        held = checkpoint.acquire(
            connection, REBUILD, projector.owner, ttl=self._lease_seconds, now=now
        )
        if held is None:
            raise NotLeader(REBUILD)

    def _projector_head(self) -> int:
        with self._engine.connect() as connection:
            return head_in(connection)


def discard_rebuild(engine: Engine) -> None:
    """Remove a rebuild begun and not finished: shadow tables, checkpoint, parked events."""
    shadow = shadow_read_model(engine.dialect.name)
    with write_transaction(engine) as connection:
        for table in _drop_order(shadow):
            table.drop(connection, checkfirst=True)
        checkpoint.reset(connection, REBUILD)
        connection.execute(parked_event.delete().where(parked_event.c.projector == REBUILD))


_PARTITION = re.compile(r"(?P<index>\d+)-of-(?P<count>\d+)")


def _partition_of(name: str, live: str) -> Partition:
    """The partition a live checkpoint name stands for (``main``: every node)."""
    match = _PARTITION.fullmatch(name.removeprefix(f"{live}/"))
    if name == live or match is None:
        return Partition()
    return Partition(int(match["index"]), int(match["count"]))


def _live_positions(connection: Connection, live: str, *, lock: bool = False) -> dict[str, int]:
    """The live checkpoints (``live``, or each partition ``live/i-of-n``) and their positions.

    A partition that never ran stands at 0; so does ``live`` when no projector ran. A plain
    ``live`` checkpoint at 0 beside partitions (left by an older ``replay --verify``) is not
    one of them; two schemes that both applied events raise :class:`MixedCheckpoints`.
    """
    c = projector_checkpoint.c
    query = sa.select(c.name, c.position).where(
        sa.or_(c.name == live, c.name.startswith(f"{live}/", autoescape=True))
    )
    if lock and not is_sqlite(connection):  # SQLite's BEGIN IMMEDIATE already excludes writers
        query = query.with_for_update()
    found = {name: int(position) for name, position in connection.execute(query)}
    schemes: dict[int, dict[str, int]] = {}
    for name, position in found.items():
        partition = _partition_of(name, live)
        if name == live or partition.count > 1:
            schemes.setdefault(partition.count, {})[name] = position
    if len(schemes) > 1 and not any(schemes.get(1, {}).values()):
        schemes.pop(1, None)
    if len(schemes) > 1:
        raise MixedCheckpoints(sorted(name for names in schemes.values() for name in names))
    if not schemes:
        return {live: 0}
    count, positions = next(iter(schemes.items()))
    names = [Partition(index, count).checkpoint_name(live) for index in range(count)]
    return {name: positions.get(name, 0) for name in names}


def _hand_over_parked(connection: Connection, names: list[str]) -> None:
    """The rebuilt model's parked events replace the old model's: each goes to the live
    checkpoints whose partition owns its node (a command spanning nodes: to all of them)."""
    parked = parked_event.c
    connection.execute(parked_event.delete().where(parked.projector.in_(names)))
    rows = connection.execute(sa.select(parked_event).where(parked.projector == REBUILD)).all()
    for name in names:
        partition = _partition_of(name, names[0].split("/")[0])
        for row in rows:
            key = (row.account, row.service, row.node)
            if not (row.service and row.node) or partition.owns_node(key):
                values = {**row._mapping, "projector": name}
                values.pop("id")
                connection.execute(parked_event.insert().values(values))
    connection.execute(parked_event.delete().where(parked.projector == REBUILD))


def _position(connection: Connection, name: str) -> int:
    value = connection.execute(
        sa.select(projector_checkpoint.c.position).where(projector_checkpoint.c.name == name)
    ).scalar()
    return int(value or 0)


def _as_dict(tables: ReadModel) -> dict[str, sa.Table]:
    return {
        "pubsub_node": tables.node,
        "pubsub_item": tables.item,
        "pubsub_counter": tables.counter,
        "pubsub_content": tables.content,
    }


def _drop_order(tables: ReadModel) -> tuple[sa.Table, ...]:
    """The tables, children first."""
    return (tables.item, tables.content, tables.counter, tables.node)


def _empty(connection: Connection, tables: ReadModel) -> None:
    for table in _drop_order(tables):
        connection.execute(table.delete())


def _copy(connection: Connection, source: ReadModel, target: ReadModel) -> None:
    """PostgreSQL: replace the live rows by the shadow ones (MVCC keeps readers on the old)."""
    _empty(connection, target)
    for origin, destination in (
        (source.node, target.node),
        (source.content, target.content),
        (source.item, target.item),
        (source.counter, target.counter),
    ):
        names = [column.name for column in destination.c]
        connection.execute(
            destination.insert().from_select(names, sa.select(*(origin.c[n] for n in names)))
        )
    for table in (target.node, target.content, target.item):
        connection.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
        )


RETIRED_PREFIX = "retired_"


def _rename_swap(connection: Connection, shadow: ReadModel) -> None:
    """SQLite: rename the shadow tables into place; the live ones are retired, dropped later.

    Deleting or copying the rows costs as much as building them (each row spans overflow
    pages); a rename costs nothing. The live tables' indexes and search triggers, and the
    views, are read back, moved to the new tables from their own SQL, and the search indexes
    (full text, keys) are rebuilt in one pass each.
    """
    live = [
        t.name.removeprefix(SHADOW_PREFIX)
        for t in (shadow.node, shadow.content, shadow.item, shadow.counter)
    ]
    kept = connection.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND sql IS NOT NULL AND tbl_name IN (?, ?, ?, ?)",
        tuple(live),
    ).all()
    # Views too (pubsub_item_text, migration 0012): a rename would point them at the retired
    # tables for good.
    views = connection.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE type = 'view'"
    ).all()
    for kind, name, _sql in [*kept, *views]:
        connection.exec_driver_sql(f'DROP {kind.upper()} "{name}"')
    for name in live:
        connection.exec_driver_sql(f'ALTER TABLE "{name}" RENAME TO "{RETIRED_PREFIX}{name}"')
    shadow_indexes = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN (?, ?, ?, ?)",
        tuple(SHADOW_PREFIX + name for name in live),
    ).scalars()
    for name in list(shadow_indexes):
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    for name in live:  # the parent first: its children's foreign keys follow the rename
        connection.exec_driver_sql(f'ALTER TABLE "{SHADOW_PREFIX}{name}" RENAME TO "{name}"')
    for _kind, _name, sql in [*views, *kept]:
        connection.exec_driver_sql(sql)
    fts = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE name = 'pubsub_item_fts'"
    ).scalar()
    if fts:
        # Contentless (migration 0012): emptied, then filled from every item's text.
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('delete-all')"
        )
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_fts(rowid, text, node_id) "
            "SELECT id, text, node_id FROM pubsub_item_text"
        )
    # The searchable keys too (kept by triggers on pubsub_item, which the shadow had none of).
    connection.execute(pubsub_item_key.delete())
    # Their accounts first: the shadow nodes were written without pubsub_account's trigger.
    connection.exec_driver_sql(ACCOUNT_FILL)
    columns = ", ".join(column.name for column in pubsub_item_key.c)
    connection.exec_driver_sql(
        f"INSERT INTO pubsub_item_key ({columns}) "
        + item_key_select("sqlite", SEARCHABLE_PATHS, trigger=False)
    )


def drop_retired(engine: Engine) -> None:
    """Drop the tables a SQLite swap retired (slow for big tables, so after the swap)."""
    with write_transaction(engine) as connection:
        for name in ("pubsub_counter", "pubsub_item", "pubsub_content", "pubsub_node"):
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{RETIRED_PREFIX}{name}"')
