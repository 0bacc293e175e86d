"""The read model's rows as the query library reads them: node facts, item columns, orders.

Orders, oldest first (the ranks are the projector's, see ``projector/ranks.py``):
``service`` = (service_rank, id), ``creation`` = (creation_rank, id), ``modification`` =
(modification_rank, id), ``publication`` = (published_at, service_rank, id). Each has an index
on (node_id, rank, id), so the newest N of a node are read down the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node

from .model import PageItem

_item = pubsub_item.c
_node = pubsub_node.c
_content = pubsub_content.c

#: What :func:`item_columns` are read from: the item and its content (payload, parsed JSON,
#: parse error), one row by primary key for each item read.
ITEMS = pubsub_item.outerjoin(pubsub_content, _content.id == _item.content_id)

ORDER_KEYS: dict[str, tuple[sa.ColumnElement[Any], ...]] = {
    "service": (_item.service_rank, _item.id),
    "creation": (_item.creation_rank, _item.id),
    "modification": (_item.modification_rank, _item.id),
    "publication": (_item.published_at, _item.service_rank, _item.id),
}


@dataclass(frozen=True, slots=True)
class NodeRow:
    """What a read needs to know of a node: where its items are and whether they are all there."""

    id: int
    sync_state: str
    item_count: int
    to_sync: bool
    sync_requested: bool
    deleted: bool
    item_order: str | None = None
    """How the service lists items (``creation`` or ``modification``), when learned."""

    def order_name(self, order: str) -> str:
        """The order a page in ``order`` is in, by name (``service`` resolved when known)."""
        return (self.item_order or "service") if order == "service" else order


def parsed_text(dialect: str) -> sa.ColumnElement[Any]:
    """The ``parsed`` column as JSON text, undecoded (the model decodes it on demand)."""
    if dialect == "postgresql":
        return sa.cast(_content.parsed, sa.Text).label("parsed")
    return sa.type_coerce(_content.parsed, sa.Text).label("parsed")


def item_columns(dialect: str) -> tuple[sa.ColumnElement[Any], ...]:
    """The columns :func:`to_item` reads, in its order (select them from :data:`ITEMS`)."""
    return (
        _item.item_id,
        _item.publisher,
        _content.payload,
        parsed_text(dialect),
        _item.published_at,
        _item.updated_at,
        _content.parse_error,
    )


def to_item(row: Sequence[Any], at: int = 0) -> PageItem:
    """The item whose :func:`item_columns` start at ``row[at]``."""
    if at:
        row = row[at : at + _ITEM_WIDTH]
    return PageItem(*row)


#: How many columns :func:`item_columns` gives.
_ITEM_WIDTH = 7


NODE_COLUMNS = (
    _node.id,
    _node.sync_state,
    _node.item_count,
    _node.to_sync,
    _node.sync_requested_position,
    _node.deleted,
    _node.item_order,
)
#: Where the item columns start in a row that begins with the node's.
NODE_WIDTH = len(NODE_COLUMNS)


def node_row(row: Sequence[Any]) -> NodeRow:
    return NodeRow(row[0], row[1], row[2], bool(row[3]), row[4] is not None, bool(row[5]), row[6])
