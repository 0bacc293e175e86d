"""Pages the cache computes outside the hot path: RSM cursors and indexes in SQL, sets by item
id or by size in memory, and what a PARTIAL node may answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.projector.schema import pubsub_item

from .errors import RsmItemNotFound
from .model import Order, PageItem, RsmRequest, RsmResult
from .rows import ITEMS, ORDER_KEYS, NodeRow, to_item
from .rsm import result_for, window

_item = pubsub_item.c


class PageReader:
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
        statement = sa.select(*self.columns).select_from(ITEMS).where(_item.node_id == self.node.id)
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


def partial_answer(
    order: Order,
    rsm: RsmRequest | None,
    item_ids: Sequence[str] | None,
    max_items: int | None,
    items: list[PageItem],
    node: NodeRow,
    reader: PageReader,
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
