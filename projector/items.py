"""Buffered writes to ``pubsub_item``: upserts keyed by item id, retractions, bulk deletes.

The writer remembers, per (node, item id), what the table holds or will hold after the next
flush: enough to tell a re-publication of the same content (only bookkeeping changes,
invariant 4) from a new or changed item (parsed again and upserted), without a query per item.

Payloads live in ``pubsub_content`` (:mod:`.contents`), once per distinct content: a flush
inserts the contents its upserts reference, and :meth:`ItemWriter.collect` deletes, at the end
of the batch, the contents that items it deleted or changed referenced and nothing else does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.events import Item
from pubsub_cache.events.db import is_sqlite
from pubsub_cache.projector.analysers import Analyser
from pubsub_cache.projector.contents import Content, ContentStore
from pubsub_cache.projector.payloads import (
    NOT_PARSED,
    ParseCache,
    PayloadColumns,
    content_digest,
)
from pubsub_cache.projector.ranks import Placement, place
from pubsub_cache.projector.schema import LIVE, ReadModel

ItemKey = tuple[int, str]
_CHUNK = 500
_KEEP_ON_CONFLICT = {"id", "node_id", "item_id", "created_position", "created_at"}


@dataclass(slots=True)
class Stored:
    """What the applier needs to know of an item that exists."""

    digest: bytes | None
    """Of its content (``None``: notify-only)."""
    content_id: int | None
    """Its content's row, once written (``None`` too until the flush that writes it)."""
    created_position: int
    created_at: float
    creation_rank: int
    modification_rank: int


class ItemWriter:
    """Buffers item changes for one batch on ``connection``; :meth:`flush` writes them."""

    def __init__(
        self,
        connection: Connection,
        tables: ReadModel = LIVE,
        parse_cache: ParseCache | None = None,
    ) -> None:
        self._connection = connection
        self._tables = tables
        self._contents = ContentStore(connection, tables.content)
        self._derives_text = is_sqlite(connection)
        """SQLite stores no text its parsed JSON gives back (``projector/search_text.py``)."""
        self._parse_cache = (
            parse_cache if parse_cache is not None else ParseCache(derive_text=self._derives_text)
        )
        self._new_contents: dict[bytes, Content] = {}
        """The contents of the buffered upserts, by digest (those still referenced are written)."""
        self._released: set[int] = set()
        """Contents that deleted or changed items referenced: collected if nothing else does."""
        self._known: dict[ItemKey, Stored | None] = {}
        self._upserts: dict[ItemKey, list[Any]] = {}
        self._deletes: set[ItemKey] = set()
        self._touched: dict[ItemKey, list[Any]] = {}
        """Items whose payload is unchanged: new ranks and ``synced_by`` only."""
        self._empty: set[int] = set()
        self.shrunk: set[int] = set()
        """Nodes that may have lost rows in this batch (retractions, deletions): their counts
        are taken again; every other node's count moves by the items :meth:`publish` added."""
        self._upsert = _upsert_statement(connection.dialect.name, tables.item.name)

    def node_created(self, node_id: int) -> None:
        """A node created in this batch holds no item yet: nothing to look up for it."""
        self._empty.add(node_id)

    def prefetch(self, node_id: int, item_ids: Iterable[str]) -> None:
        """Load what the table holds for these items, in a few queries."""
        wanted = [i for i in dict.fromkeys(item_ids) if (node_id, i) not in self._known]
        if node_id in self._empty:
            for item_id in wanted:
                self._known[(node_id, item_id)] = None
            return
        columns = self._tables.item.c
        content = self._tables.content
        joined = self._tables.item.outerjoin(content, content.c.id == columns.content_id)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for item_id in chunk:
                self._known[(node_id, item_id)] = None
            rows = self._connection.execute(
                sa.select(
                    columns.item_id,
                    content.c.digest,
                    columns.content_id,
                    columns.created_position,
                    columns.created_at,
                    columns.creation_rank,
                    columns.modification_rank,
                )
                .select_from(joined)
                .where(columns.node_id == node_id, columns.item_id.in_(chunk))
            )
            for item_id, found, *stored in rows:
                digest = bytes(found) if found is not None else None
                self._known[(node_id, item_id)] = Stored(digest, *stored)

    def publish(
        self,
        node_id: int,
        analyser: Analyser | None,
        item: Item,
        position: int,
        *,
        when: float,
        sync_id: str | None,
        placement: Placement,
        service_order: str | None,
    ) -> bool:
        """Record that ``item`` was published (or listed by sync ``sync_id``) at ``position``,
        placed in the node's orders by ``placement`` (see :mod:`.ranks`).

        Returns whether the item is new to the table (the node gains a row), which lets the
        applier bound a node's size without counting it.
        """
        key = (node_id, item.id)
        if key not in self._known:
            self.prefetch(node_id, [item.id])
        stored = self._known[key]
        known = None if stored is None else (stored.creation_rank, stored.modification_rank)
        ranks = place(placement, known, service_order)
        parser = analyser.parser if analyser is not None else None
        name, version = (parser.name, parser.version) if parser is not None else (None, None)
        digest = None if item.payload is None else content_digest(item.payload, name, version)
        if stored is not None and (item.payload is None or stored.digest == digest):
            # The same payload again (or a notify-only repeat): bookkeeping only.
            stored.creation_rank, stored.modification_rank = ranks.creation, ranks.modification
            pending = self._upserts.get(key)
            if pending is not None:
                pending[_RANKS] = list(ranks)
                if sync_id is not None:
                    pending[_SYNCED_BY] = sync_id
            else:
                touched = self._touched.get(key)
                synced_by = sync_id or (touched[0] if touched else None)
                self._touched[key] = [synced_by, *ranks]
            return False
        columns = NOT_PARSED
        if item.payload is not None and digest is not None:
            columns = self._parse_cache.columns(digest, item.payload, parser)
            if digest not in self._new_contents:
                self._new_contents[digest] = Content(
                    name, version, columns.parse_error, columns.parsed, item.payload
                )
        added = stored is None
        if stored is None:
            stored = Stored(digest, None, position, when, ranks.creation, ranks.modification)
        else:
            if stored.content_id is not None:
                self._released.add(stored.content_id)
            stored = Stored(digest, None, stored.created_position, stored.created_at, *ranks[:2])
        published = columns.published or item.delay
        self._upserts[key] = [
            node_id,
            item.id,
            item.publisher,
            digest,  # the content's id once written (flush)
            self._stored_text(columns),
            published.timestamp() if published is not None else when,
            stored.created_at,
            when,
            stored.created_position,
            position,
            sync_id,
            *ranks,
        ]
        self._known[key] = stored
        self._touched.pop(key, None)
        return added

    def _stored_text(self, columns: PayloadColumns) -> str | None:
        """The ``text`` column: on SQLite NULL when derived (or when there is no JSON, hence no
        text), the parser's text otherwise, never NULL then."""
        if not self._derives_text:
            return columns.text
        if columns.text_derived or columns.parsed is None:
            return None
        return columns.text or ""

    def retract(self, node_id: int, item_id: str) -> None:
        """Record that the item is gone."""
        key = (node_id, item_id)
        stored = self._known.get(key)
        if stored is not None and stored.content_id is not None:
            self._released.add(stored.content_id)
        self._upserts.pop(key, None)
        self._touched.pop(key, None)
        self._deletes.add(key)
        self.shrunk.add(node_id)
        self._known[key] = None

    def delete_where(self, condition: sa.ColumnElement[bool], *, nodes: Iterable[int]) -> None:
        """Delete every item matching ``condition`` (items of ``nodes`` only) right away."""
        self.flush()
        deleted = self._connection.execute(
            self._tables.item.delete().where(condition).returning(self._tables.item.c.content_id)
        )
        self._released.update(i for i in deleted.scalars() if i is not None)
        affected = set(nodes)
        self.shrunk |= affected
        self._empty -= affected
        for key in [key for key in self._known if key[0] in affected]:
            del self._known[key]

    def collect(self) -> int:
        """Write everything buffered, then delete the contents that deleted or changed items
        referenced and no item does any more; returns how many went."""
        self.flush()
        released, self._released = self._released, set()
        return self._contents.collect(self._tables.item, released) if released else 0

    def flush(self) -> None:
        """Write everything buffered: deletions first, so a re-publication starts afresh."""
        columns = self._tables.item.c
        if self._deletes:
            by_node: dict[int, list[str]] = defaultdict(list)
            for node_id, item_id in self._deletes:
                by_node[node_id].append(item_id)
            for node_id, item_ids in by_node.items():
                for start in range(0, len(item_ids), _CHUNK):
                    deleted = self._connection.execute(
                        self._tables.item.delete()
                        .where(
                            columns.node_id == node_id,
                            columns.item_id.in_(item_ids[start : start + _CHUNK]),
                        )
                        .returning(columns.content_id)
                    )
                    self._released.update(i for i in deleted.scalars() if i is not None)
            self._deletes.clear()
        if self._upserts:
            # The contents the upserts reference, and only those (an item published twice in
            # one batch leaves its first content unwritten).
            wanted = {
                row[_CONTENT]: self._new_contents[row[_CONTENT]]
                for row in self._upserts.values()
                if row[_CONTENT] is not None
            }
            ids = self._contents.ids(wanted)
            rows = []
            for key, row in self._upserts.items():
                digest = row[_CONTENT]
                content_id = ids[digest] if digest is not None else None
                stored = self._known.get(key)
                if stored is not None and stored.digest == digest:
                    stored.content_id = content_id
                rows.append((*row[:_CONTENT], content_id, *row[_CONTENT + 1 :]))
            self._connection.exec_driver_sql(self._upsert, rows)
            self._upserts.clear()
        self._new_contents.clear()
        if self._touched:
            # synced_by is only ever set here (a notification's repeat keeps the last sync's).
            self._connection.execute(
                self._tables.item.update()
                .where(
                    columns.node_id == sa.bindparam("key_node"),
                    columns.item_id == sa.bindparam("key_item"),
                )
                .values(
                    synced_by=sa.func.coalesce(sa.bindparam("sync_id"), columns.synced_by),
                    creation_rank=sa.bindparam("creation"),
                    modification_rank=sa.bindparam("modification"),
                    service_rank=sa.bindparam("service"),
                ),
                [
                    {
                        "key_node": node_id,
                        "key_item": item_id,
                        "sync_id": sync_id,
                        "creation": creation,
                        "modification": modification,
                        "service": service,
                    }
                    for (node_id, item_id), (sync_id, creation, modification, service) in (
                        self._touched.items()
                    )
                ],
            )
            self._touched.clear()


#: The columns of an upsert row, in the order :meth:`ItemWriter.publish` builds them.
_ROW = (
    "node_id", "item_id", "publisher", "content_id", "text", "published_at", "created_at",
    "updated_at",
    "created_position", "updated_position", "synced_by",
    "creation_rank", "modification_rank", "service_rank",
)  # fmt: skip


_CONTENT = _ROW.index("content_id")
_SYNCED_BY = _ROW.index("synced_by")
_RANKS = slice(_ROW.index("creation_rank"), _ROW.index("service_rank") + 1)


def _upsert_statement(dialect: str, table: str) -> str:
    # Plain SQL through the driver's executemany: Core's per-row parameter processing cost a
    # fifth of the projection rate (ops/bench/project.py). Both databases speak this upsert.
    mark = "%s" if dialect == "postgresql" else "?"
    values = ", ".join(mark for _name in _ROW)
    updates = ", ".join(
        f"{name} = excluded.{name}" for name in _ROW if name not in _KEEP_ON_CONFLICT
    )
    return (
        f"INSERT INTO {table} ({', '.join(_ROW)}) VALUES ({values}) "
        f"ON CONFLICT (node_id, item_id) DO UPDATE SET {updates}"
    )
