"""Cached reads from the read model the projector owns: pages of items, one item, node rows.

Synchronous and dumb on purpose: a view is a query over ``pubsub_node``/``pubsub_item``. The
caller (:mod:`.api`) decides between this and a live read from what :meth:`CacheReader.items`
answers: a page, or ``None`` with the reason the cache cannot answer.

The hot path (the newest or oldest N items of a node, the shape of nearly every read) reads the
node's sync state and its items in one snapshot, with pre-compiled statements run on a kept
DB-API connection (:mod:`.connections`) and none of Core's per-row result processing: one
LATERAL join on PostgreSQL (one round trip), two statements in one read transaction on SQLite.
That keeps a cached page of 20 within the 2x-raw-SQL budget (``pubsub-cache bench read``).
Every other shape goes through Core in one read transaction.

Orders: see :mod:`.rows`; other request shapes: :mod:`.pages`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node

from .cache_rows import ItemFields, NodeFields, NodeItemFields
from .connections import KeptConnections
from .errors import InvalidQuery, RsmItemNotFound
from .model import Order, Page, PageItem, RsmRequest
from .pages import PageReader, partial_answer
from .rows import ITEMS, NODE_COLUMNS, ORDER_KEYS, NodeRow, item_columns
from .rsm import result_for

_item = pubsub_item.c
_node = pubsub_node.c

#: Most item ids one request may name.
MAX_ITEM_IDS = 1000


@dataclass(frozen=True, slots=True)
class CacheAnswer:
    """A page when the cache can answer; otherwise ``page`` is ``None`` and ``reason`` says why."""

    node: NodeRow | None
    page: Page | None
    reason: str | None = None


R = TypeVar("R", NodeFields, ItemFields, NodeItemFields)
DriverParameters = tuple[object, ...] | dict[str, object]


class _Compiled(Generic[R]):
    """A Core statement compiled once for one dialect, run on a raw DB-API cursor; its rows
    have the fields of ``shape`` (checked against the statement's columns when compiled)."""

    def __init__(self, statement: sa.Select[Any], engine: Engine, shape: type[R]) -> None:
        columns = tuple(statement.selected_columns.keys())
        if columns != shape._fields:
            raise AssertionError(f"{shape.__name__} has {shape._fields}, the query {columns}")
        self.shape: type[R] = shape
        compiled = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        self.defaults: dict[str, object] = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        self.order: Sequence[str] | None = compiled.positiontup if compiled.positional else None

    def values(self, **params: object) -> DriverParameters:
        """The parameters in the form the driver takes (a tuple for ``?``, else a dict)."""
        values = {**self.defaults, **params}
        return values if self.order is None else tuple(values[name] for name in self.order)

    def rows(self, connections: KeptConnections, **params: object) -> list[R]:
        """Run on a kept connection; return every row."""
        values = self.values(**params)
        make = self.shape._make

        def read(connection: Any) -> list[R]:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, values)
                return [make(row) for row in cursor.fetchall()]
            finally:
                cursor.close()

        return connections.run(read)


class CacheReader:
    """Reads pages, items and node rows of one account's view from the read model."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._columns = item_columns(self.dialect)
        self._compiled: dict[object, _Compiled[Any]] = {}
        self._connections = KeptConnections(engine)

    def close(self) -> None:
        """Give the connections kept for reads back to the engine's pool."""
        self._connections.close()

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
                return CacheAnswer(row, _end_page(items, descending, row, max_items, order))
            if row.sync_state != "PARTIAL":
                return CacheAnswer(row, None, _unsynced(row))
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(*NODE_COLUMNS).where(
                    _node.account == account, _node.service == service, _node.node == node
                )
            ).first()
            if found is None:
                return CacheAnswer(None, None, "never seen by this account")
            row = NodeFields._make(found).node()
            if row.sync_state not in ("COMPLETED", "PARTIAL"):
                return CacheAnswer(row, None, _unsynced(row))
            reader = PageReader(connection, self._columns, row, order, service, node)
            try:
                items, rsm_result = reader.page(rsm, item_ids, max_items)
            except RsmItemNotFound:
                if row.sync_state == "COMPLETED":
                    raise
                return CacheAnswer(row, None, "PARTIAL: the RSM cursor is not cached")
        named = row.order_name(order)
        if row.sync_state == "COMPLETED":
            page = Page(items, rsm_result, complete=True, from_cache=True, order=named)
            return CacheAnswer(row, page)
        exact, why_not = partial_answer(order, rsm, item_ids, max_items, items, row, reader)
        if why_not is not None:
            return CacheAnswer(row, None, f"PARTIAL: {why_not}")
        if not exact:  # the head of the set is missing: no index, no count
            rsm_result = result_for(items, None, None)
        return CacheAnswer(
            row, Page(items, rsm_result, complete=exact, from_cache=True, order=named)
        )

    def item(
        self, account: str, service: str, node: str, item_id: str
    ) -> tuple[NodeRow | None, PageItem | None]:
        """The node's row and the cached item (``None`` when absent)."""
        one = self._statement("item", NodeItemFields, self._one_item)
        rows = one.rows(
            self._connections, account=account, service=service, node=node, item_id=item_id
        )
        if not rows:
            return None, None
        return rows[0].node(), rows[0].item()

    def _end(
        self, order: Order, descending: bool, account: str, service: str, node: str, limit: int
    ) -> tuple[NodeRow | None, list[PageItem]]:
        """The node's row and its first (or last) ``limit`` items, in one snapshot."""
        key = (account, service, node)
        if self.dialect != "sqlite":
            # One round trip: the node's columns ride along on every item row.
            joined = self._statement(
                ("joined", order, descending), NodeItemFields, self._joined_end, order, descending
            )
            rows = joined.rows(
                self._connections, account=key[0], service=key[1], node=key[2], limit=limit
            )
            if not rows:
                return None, []
            return rows[0].node(), [item for row in rows if (item := row.item()) is not None]
        # SQLite: two statements in one read transaction beat one join, whose node columns
        # would be built again as Python objects for every row.
        find = self._statement("node", NodeFields, self._find_node)
        items = self._statement(
            ("items", order, descending), ItemFields, self._items_of_node, order, descending
        )
        node_values = find.values(account=key[0], service=key[1], node=key[2])

        # The item rows become PageItems straight from the driver's tuples: ItemFields is their
        # shape (checked when compiled), in PageItem's order; no row object in between.
        def read(connection: Any) -> tuple[Any, list[Any]]:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN")
                found = cursor.execute(find.sql, node_values).fetchone()
                rows = []
                if found is not None:
                    rows = cursor.execute(
                        items.sql, items.values(node_id=found[0], limit=limit)
                    ).fetchall()
                cursor.execute("COMMIT")
                return found, rows
            finally:
                cursor.close()

        found, item_rows = self._connections.run(read)
        if found is None:
            return None, []
        return NodeFields._make(found).node(), [PageItem(*r) for r in item_rows]

    def _statement(
        self, key: object, shape: type[R], build: Callable[..., sa.Select[Any]], *args: object
    ) -> _Compiled[R]:
        compiled: _Compiled[R] | None = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(build(*args), self.engine, shape)
        return compiled

    def _find_node(self) -> sa.Select[Any]:
        return sa.select(*NODE_COLUMNS).where(*_node_key())

    def _items_of_node(self, order: Order, descending: bool) -> sa.Select[Any]:
        keys = ORDER_KEYS[order]
        return (
            sa.select(*self._columns)
            .select_from(ITEMS)
            .where(_item.node_id == sa.bindparam("node_id"))
            .order_by(*(key.desc() if descending else key.asc() for key in keys))
            .limit(sa.bindparam("limit"))
        )

    def _joined_end(self, order: Order, descending: bool) -> sa.Select[Any]:
        # LATERAL, so that PostgreSQL reads the newest items down the node's index: with a
        # plain outer join and ORDER BY ... LIMIT on the join it sorts the whole node.
        keys = ORDER_KEYS[order]
        ranked = [key.label(f"key_{n}") for n, key in enumerate(keys)]
        # The JSON is turned into text outside: inside, it would be for every row the sort
        # reads (a whole sync page shares one position), not for the LIMIT's.
        parsed = pubsub_content.c.parsed
        inner = [parsed if column.name == "parsed" else column for column in self._columns]
        newest = (
            sa.select(*inner, *ranked)
            .select_from(ITEMS)
            .where(_item.node_id == _node.id)
            .order_by(*(key.desc() if descending else key.asc() for key in keys))
            .limit(sa.bindparam("limit"))
            .lateral("newest")
        )
        columns = [
            sa.cast(newest.c.parsed, sa.Text).label("parsed")
            if column.name == "parsed"
            else newest.c[column.name]
            for column in self._columns
        ]
        order_by = [newest.c[key.name] for key in ranked]
        return (
            sa.select(*NODE_COLUMNS, *columns)
            .select_from(pubsub_node.outerjoin(newest, sa.true()))
            .where(*_node_key())
            .order_by(*(key.desc() if descending else key.asc() for key in order_by))
        )

    def _one_item(self) -> sa.Select[Any]:
        joined = pubsub_node.outerjoin(
            pubsub_item,
            sa.and_(_item.node_id == _node.id, _item.item_id == sa.bindparam("item_id")),
        ).outerjoin(pubsub_content, pubsub_content.c.id == _item.content_id)
        return sa.select(*NODE_COLUMNS, *self._columns).select_from(joined).where(*_node_key())


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
    items: list[PageItem], descending: bool, node: NodeRow, max_items: int | None, order: Order
) -> Page:
    count = node.item_count if max_items is None else min(node.item_count, max_items)
    if descending:
        items.reverse()
        index = count - len(items)
    else:
        index = 0
    rsm = result_for(items, index, count)
    return Page(items, rsm, complete=True, from_cache=True, order=node.order_name(order))


def _unsynced(node: NodeRow) -> str:
    if node.deleted:
        return "deleted"
    return f"sync state {node.sync_state}"
