"""Cached reads from the read model the projector owns: pages of items, one item, node rows.

Synchronous and dumb on purpose: a view is a query over ``pubsub_node``/``pubsub_item``. The
caller (:mod:`.api`) decides between this and a live read from what :meth:`CacheReader.items`
answers: a page, or ``None`` with the reason the cache cannot answer.

The hot path (the newest or oldest N items of a node, the shape of nearly every read) is one
pre-compiled statement run on the pooled DB-API connection: it reads the node's sync state and
the items together, in one snapshot, with none of Core's per-row result processing. That keeps
a cached page of 20 within the 2x-raw-SQL budget (``pubsub-cache bench read``). Every other
shape goes through Core in one read transaction.

Orders, oldest first as Prosody sends items (ties keep the order of the event that listed them):
``creation`` = (created_position, id), ``modification`` = (updated_position, id),
``publication`` = (published_at, created_position, id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.projector.schema import pubsub_item, pubsub_node

from .errors import InvalidQuery, RsmItemNotFound
from .model import Order, Page, PageItem, RsmRequest, RsmResult
from .rsm import result_for, window

_item = pubsub_item.c
_node = pubsub_node.c

ORDER_KEYS: dict[str, tuple[sa.ColumnElement[Any], ...]] = {
    "creation": (_item.created_position, _item.id),
    "modification": (_item.updated_position, _item.id),
    "publication": (_item.published_at, _item.created_position, _item.id),
}

#: Most item ids one request may name.
MAX_ITEM_IDS = 1000


@dataclass(frozen=True, slots=True)
class NodeRow:
    """What a read needs to know of a node: where its items are and whether they are all there."""

    id: int
    sync_state: str
    item_count: int
    to_sync: bool
    sync_requested: bool
    deleted: bool


@dataclass(frozen=True, slots=True)
class CacheAnswer:
    """A page when the cache can answer; otherwise ``page`` is ``None`` and ``reason`` says why."""

    node: NodeRow | None
    page: Page | None
    reason: str | None = None


def parsed_text(dialect: str) -> sa.ColumnElement[Any]:
    """The ``parsed`` column as JSON text, undecoded (the model decodes it on demand)."""
    if dialect == "postgresql":
        return sa.cast(_item.parsed, sa.Text).label("parsed")
    return sa.type_coerce(_item.parsed, sa.Text).label("parsed")


def item_columns(dialect: str) -> tuple[sa.ColumnElement[Any], ...]:
    """The columns :func:`to_item` reads, in its order."""
    return (
        _item.item_id,
        _item.publisher,
        _item.payload,
        parsed_text(dialect),
        _item.published_at,
        _item.updated_at,
    )


def to_item(row: Sequence[Any], at: int = 0) -> PageItem:
    """The item whose :func:`item_columns` start at ``row[at]``."""
    if at:
        row = row[at : at + 6]
    return PageItem(*row)


_NODE_COLUMNS = (
    _node.id,
    _node.sync_state,
    _node.item_count,
    _node.to_sync,
    _node.sync_requested_position,
    _node.deleted,
)


def _node_row(row: Sequence[Any]) -> NodeRow:
    return NodeRow(row[0], row[1], row[2], bool(row[3]), row[4] is not None, bool(row[5]))


class _Compiled:
    """A Core statement compiled once for one dialect, run on a raw DB-API cursor."""

    def __init__(self, statement: sa.ClauseElement, engine: Engine) -> None:
        compiled: Any = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        self.defaults: dict[str, Any] = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        self.order: Sequence[str] | None = compiled.positiontup if compiled.positional else None

    def values(self, **params: Any) -> Any:
        """The parameters in the form the driver takes (a tuple for ``?``, else a dict)."""
        values = {**self.defaults, **params}
        return values if self.order is None else tuple(values[name] for name in self.order)

    def rows(self, engine: Engine, **params: Any) -> list[Any]:
        """Run on a pooled connection; return every row."""
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, self.values(**params))
                return list(cursor.fetchall())
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool, which ends the read transaction


class CacheReader:
    """Reads pages, items and node rows of one account's view from the read model."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._columns = item_columns(self.dialect)
        self._compiled: dict[object, _Compiled] = {}

    def items(
        self,
        account: str,
        service: str,
        node: str,
        *,
        order: Order,
        rsm: RsmRequest | None,
        item_ids: Sequence[str] | None,
        max_items: int | None,
    ) -> CacheAnswer:
        """The page the cache would answer, or why it cannot (see the module docstring)."""
        if item_ids is not None and len(item_ids) > MAX_ITEM_IDS:
            raise InvalidQuery(f"at most {MAX_ITEM_IDS} item ids per request, got {len(item_ids)}")
        end = _end_of_set(rsm, item_ids, max_items)
        if end is not None:
            descending, limit = end
            row, items = self._end(order, descending, account, service, node, limit)
            if row is None:
                return CacheAnswer(None, None, "never seen by this account")
            if row.sync_state == "COMPLETED":
                return CacheAnswer(row, _end_page(items, descending, row, max_items))
            if row.sync_state != "PARTIAL":
                return CacheAnswer(row, None, _unsynced(row))
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(*_NODE_COLUMNS).where(
                    _node.account == account, _node.service == service, _node.node == node
                )
            ).first()
            if found is None:
                return CacheAnswer(None, None, "never seen by this account")
            row = _node_row(found)
            if row.sync_state not in ("COMPLETED", "PARTIAL"):
                return CacheAnswer(row, None, _unsynced(row))
            reader = _PageReader(connection, self._columns, row, order, service, node)
            try:
                items, rsm_result = reader.page(rsm, item_ids, max_items)
            except RsmItemNotFound:
                if row.sync_state == "COMPLETED":
                    raise
                return CacheAnswer(row, None, "PARTIAL: the RSM cursor is not cached")
        if row.sync_state == "COMPLETED":
            return CacheAnswer(row, Page(items, rsm_result, complete=True, from_cache=True))
        exact, why_not = _partial_answer(order, rsm, item_ids, max_items, items, row, reader)
        if why_not is not None:
            return CacheAnswer(row, None, f"PARTIAL: {why_not}")
        if not exact:  # the head of the set is missing: no index, no count
            rsm_result = result_for(items, None, None)
        return CacheAnswer(row, Page(items, rsm_result, complete=exact, from_cache=True))

    def item(
        self, account: str, service: str, node: str, item_id: str
    ) -> tuple[NodeRow | None, PageItem | None]:
        """The node's row and the cached item (``None`` when absent)."""
        one = self._statement("item", self._one_item)
        rows = one.rows(self.engine, account=account, service=service, node=node, item_id=item_id)
        if not rows:
            return None, None
        return _node_row(rows[0]), (to_item(rows[0], 6) if rows[0][6] is not None else None)

    def _end(
        self, order: Order, descending: bool, account: str, service: str, node: str, limit: int
    ) -> tuple[NodeRow | None, list[PageItem]]:
        """The node's row and its first (or last) ``limit`` items, in one snapshot."""
        key = (account, service, node)
        if self.dialect != "sqlite":
            # One round trip: the node's columns ride along on every item row.
            joined = self._statement(("joined", order, descending), self._joined_end)
            rows = joined.rows(
                self.engine, account=key[0], service=key[1], node=key[2], limit=limit
            )
            if not rows:
                return None, []
            return _node_row(rows[0]), [to_item(r, 6) for r in rows if r[6] is not None]
        # SQLite: two statements in one read transaction beat one join, whose node columns
        # would be built again as Python objects for every row.
        find = self._statement("node", self._find_node)
        items = self._statement(("items", order, descending), self._items_of_node)
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN")
                found = cursor.execute(
                    find.sql, find.values(account=key[0], service=key[1], node=key[2])
                ).fetchone()
                rows = []
                if found is not None:
                    rows = cursor.execute(
                        items.sql, items.values(node_id=found[0], limit=limit)
                    ).fetchall()
                cursor.execute("COMMIT")
            finally:
                cursor.close()
        finally:
            connection.close()
        if found is None:
            return None, []
        return _node_row(found), [PageItem(*r) for r in rows]

    def _statement(self, key: object, build: Any) -> _Compiled:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(
                build(*key[1:]) if isinstance(key, tuple) else build(), self.engine
            )
        return compiled

    def _find_node(self) -> sa.ClauseElement:
        return sa.select(*_NODE_COLUMNS).where(*_node_key())

    def _items_of_node(self, order: Order, descending: bool) -> sa.ClauseElement:
        keys = ORDER_KEYS[order]
        return (
            sa.select(*self._columns)
            .where(_item.node_id == sa.bindparam("node_id"))
            .order_by(*(key.desc() if descending else key.asc() for key in keys))
            .limit(sa.bindparam("limit"))
        )

    def _joined_end(self, order: Order, descending: bool) -> sa.ClauseElement:
        keys = ORDER_KEYS[order]
        return (
            sa.select(*_NODE_COLUMNS, *self._columns)
            .select_from(pubsub_node.outerjoin(pubsub_item, _item.node_id == _node.id))
            .where(*_node_key())
            .order_by(*(key.desc() if descending else key.asc() for key in keys))
            .limit(sa.bindparam("limit"))
        )

    def _one_item(self) -> sa.ClauseElement:
        joined = pubsub_node.outerjoin(
            pubsub_item,
            sa.and_(_item.node_id == _node.id, _item.item_id == sa.bindparam("item_id")),
        )
        return sa.select(*_NODE_COLUMNS, *self._columns).select_from(joined).where(*_node_key())


def _node_key() -> tuple[sa.ColumnElement[bool], ...]:
    return (
        _node.account == sa.bindparam("account"),
        _node.service == sa.bindparam("service"),
        _node.node == sa.bindparam("node"),
    )


def _end_of_set(
    rsm: RsmRequest | None, item_ids: Sequence[str] | None, max_items: int | None
) -> tuple[bool, int] | None:
    """(descending, limit) when the request is the first or last N items of the whole node."""
    if item_ids is not None:
        return None
    if max_items is not None:
        return (True, max_items) if rsm is None and max_items > 0 else None
    if rsm is None or not rsm.max or rsm.after is not None or rsm.index is not None:
        return None
    if rsm.before == "":
        return True, rsm.max
    return (False, rsm.max) if rsm.before is None else None


def _end_page(
    items: list[PageItem], descending: bool, node: NodeRow, max_items: int | None
) -> Page:
    count = node.item_count if max_items is None else min(node.item_count, max_items)
    if descending:
        items.reverse()
        index = count - len(items)
    else:
        index = 0
    return Page(items, result_for(items, index, count), complete=True, from_cache=True)


def _unsynced(node: NodeRow) -> str:
    if node.deleted:
        return "deleted"
    return f"sync state {node.sync_state}"


class _PageReader:
    """Computes a page over the node's items in SQL, or in memory for sets by id or size."""

    def __init__(
        self,
        connection: Connection,
        columns: tuple[sa.ColumnElement[Any], ...],
        node: NodeRow,
        order: Order,
        service: str,
        node_name: str,
    ) -> None:
        self.connection = connection
        self.columns = columns
        self.node = node
        self.keys = ORDER_KEYS[order]
        self.service = service
        self.node_name = node_name
        self.ids_found = 0

    def page(
        self, rsm: RsmRequest | None, item_ids: Sequence[str] | None, max_items: int | None
    ) -> tuple[list[PageItem], RsmResult]:
        if item_ids is not None or max_items is not None:
            result_set = self._set(item_ids, max_items)
            return window(result_set, rsm, service=self.service, node=self.node_name)
        count = self.node.item_count
        if rsm is None or (rsm.max is None and rsm.after is None and not rsm.before):
            start = 0 if rsm is None or rsm.index is None else rsm.index
            items = self._select(None, False, offset=start)
            return items, result_for(items, start, count)
        if rsm.max == 0:
            return [], RsmResult(count=count)
        if rsm.before == "":
            items = self._select(None, True, limit=rsm.max)
            return items, result_for(items, count - len(items), count)
        if rsm.after is not None:
            key = self._key(rsm.after, "after")
            items = self._select(sa.tuple_(*self.keys) > sa.tuple_(*key), False, limit=rsm.max)
            return items, result_for(items, self._count(sa.tuple_(*self.keys) <= key), count)
        if rsm.before is not None:
            key = self._key(rsm.before, "before")
            items = self._select(sa.tuple_(*self.keys) < sa.tuple_(*key), True, limit=rsm.max)
            before = self._count(sa.tuple_(*self.keys) < sa.tuple_(*key))
            return items, result_for(items, before - len(items), count)
        start = rsm.index or 0
        items = self._select(None, False, limit=rsm.max, offset=start)
        return items, result_for(items, start, count)

    def _set(self, item_ids: Sequence[str] | None, max_items: int | None) -> list[PageItem]:
        if max_items == 0 or item_ids == []:
            return []
        if item_ids is None:
            return self._select(None, True, limit=max_items)
        wanted = list(dict.fromkeys(item_ids))
        items = self._select(_item.item_id.in_(wanted), False)
        self.ids_found = len(items)
        return items if max_items is None else items[-max_items:]

    def _select(
        self,
        condition: sa.ColumnElement[bool] | None,
        descending: bool,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PageItem]:
        statement = sa.select(*self.columns).where(_item.node_id == self.node.id)
        if condition is not None:
            statement = statement.where(condition)
        statement = statement.order_by(*(k.desc() if descending else k for k in self.keys))
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        items = [to_item(row) for row in self.connection.execute(statement)]
        if descending:
            items.reverse()
        return items

    def _key(self, item_id: str, cursor: str) -> tuple[Any, ...]:
        found = self.connection.execute(
            sa.select(*self.keys).where(_item.node_id == self.node.id, _item.item_id == item_id)
        ).first()
        if found is None:
            raise RsmItemNotFound(self.service, self.node_name, item_id, cursor=cursor)
        return tuple(found)

    def _count(self, condition: sa.ColumnElement[bool]) -> int:
        statement = sa.select(sa.func.count()).where(_item.node_id == self.node.id, condition)
        return int(self.connection.execute(statement).scalar_one())


def _partial_answer(
    order: Order,
    rsm: RsmRequest | None,
    item_ids: Sequence[str] | None,
    max_items: int | None,
    items: list[PageItem],
    node: NodeRow,
    reader: _PageReader,
) -> tuple[bool, str | None]:
    """Whether a PARTIAL node's cached page is right: (set known exactly, why not if not).

    A partial sync misses the oldest items (the server capped its answer, or an operator purged
    by age), never the newest, which notifications keep adding. So a page is right when it can
    only hold items newer than what is missing: a full page counted from the end of the set.
    """
    if item_ids is not None:
        if reader.ids_found < len(set(item_ids)):
            return False, "some requested items are not cached"
        return True, None
    if order == "publication":
        return False, "publication order needs every item"
    if max_items is not None:
        if node.item_count < max_items:
            return False, f"fewer than {max_items} items are cached"
        return True, None
    if rsm is None or rsm.max == 0 or rsm.index is not None:
        return False, "the request needs the whole set"
    if rsm.after is not None:
        return False, None
    if rsm.before is None:
        return False, "the first page is the oldest, which is what is missing"
    if rsm.max is None or len(items) < rsm.max:
        return False, "the page reaches items that are not cached"
    return False, None
