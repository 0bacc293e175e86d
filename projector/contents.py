"""``pubsub_content``: payloads stored once per distinct content, referenced by items.

A public node subscribed by N local accounts has N views, and every notification N items with
the same payload and parse (issue 13, point 6): the items hold a ``content_id``, the content row
the payload, its parser and what the parser derived from it alone (``parsed``, ``parse_error``).
Rows are named by :func:`~pubsub_cache.projector.payloads.content_digest` and never change; an
item whose payload changes points at another row.

Concurrency (PostgreSQL, several projectors: partitions, a retry, a rebuild's swap): a row is
inserted if absent (``ON CONFLICT (digest) DO NOTHING``, in digest order so that two writers
wait on each other's rows in one order, never in a cycle), then read ``FOR KEY SHARE``: from then
until the writer commits, no collection can take the row. A collection takes its candidates
``FOR UPDATE SKIP LOCKED`` (a row a writer holds stays, for a later one or ``log compact``) and
then, in a second statement whose snapshot starts after it holds them, deletes those no item
references: a writer that committed a reference before the lock was taken is seen; one that
comes after waits for the collection's commit and finds the row gone, and inserts it again
(:meth:`ContentStore.ids` loops until every digest has its row). SQLite has one writer.
tests/storage/test_contents.py pins both the sharing and the race.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Most digests or ids in one statement.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Content:
    """One ``pubsub_content`` row to be, by its digest."""

    parser: str | None
    parser_version: int | None
    parse_error: str | None
    parsed: str | None
    """JSON text."""
    payload: str


class ContentStore:
    """The content rows of one read model (``table``: live or shadow) on ``connection``."""

    def __init__(self, connection: Connection, table: sa.Table) -> None:
        self._connection = connection
        self._table = table
        self._postgresql = connection.dialect.name == "postgresql"
        mark = "%s" if self._postgresql else "?"
        parsed = f"{mark}::jsonb" if self._postgresql else mark
        self._insert = (
            f"INSERT INTO {table.name} (digest, parser, parser_version, parse_error, parsed, "
            f"payload) VALUES ({mark}, {mark}, {mark}, {mark}, {parsed}, {mark}) "
            "ON CONFLICT (digest) DO NOTHING"
        )

    def ids(self, contents: Mapping[bytes, Content]) -> dict[bytes, int]:
        """The row id of every content, inserted where absent (and held, on PostgreSQL, until
        the transaction ends: see the module's docstring)."""
        found: dict[bytes, int] = {}
        missing = sorted(contents)
        while missing:
            rows = []
            for digest in missing:
                c = contents[digest]
                rows.append(
                    (digest, c.parser, c.parser_version, c.parse_error, c.parsed, c.payload)
                )
            self._connection.exec_driver_sql(self._insert, rows)
            found.update(self._lookup(missing))
            # A row deleted by a collection between our insert and our lock: insert it again.
            missing = [digest for digest in missing if digest not in found]
        return found

    def _lookup(self, digests: list[bytes]) -> dict[bytes, int]:
        c = self._table.c
        found: dict[bytes, int] = {}
        for start in range(0, len(digests), _CHUNK):
            query = sa.select(c.digest, c.id).where(c.digest.in_(digests[start : start + _CHUNK]))
            if self._postgresql:
                query = query.order_by(c.digest).with_for_update(key_share=True, read=True)
            found.update({bytes(d): int(i) for d, i in self._connection.execute(query)})
        return found

    def collect(self, items: sa.Table, candidates: Iterable[int]) -> int:
        """Delete the ``candidates`` no row of ``items`` references any more; returns how many
        went. Call it after the batch's item writes."""
        wanted = sorted(set(candidates))
        c = self._table.c
        gone = 0
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            if self._postgresql:
                locked = (
                    sa.select(c.id)
                    .where(c.id.in_(chunk))
                    .order_by(c.id)
                    .with_for_update(skip_locked=True)
                )
                chunk = list(self._connection.execute(locked).scalars())
                if not chunk:
                    continue
            unreferenced = ~sa.exists().where(items.c.content_id == c.id)
            result = self._connection.execute(
                self._table.delete().where(c.id.in_(chunk), unreferenced)
            )
            gone += result.rowcount
        return gone

    def sweep(self, items: sa.Table) -> int:
        """Delete every content row no item references (``log compact``); returns how many."""
        c = self._table.c
        unreferenced = ~sa.exists().where(items.c.content_id == c.id)
        ids = list(self._connection.execute(sa.select(c.id).where(unreferenced)).scalars())
        return self.collect(items, ids)
