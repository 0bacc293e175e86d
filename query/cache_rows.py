"""The rows the cached-read hot path (:mod:`.cache`) reads, by name: a node's, an item's, and
a node's joined with one of its items.

Each statement there is checked, once when compiled, to select exactly these fields in this
order, so no reader counts column offsets; rows stay plain tuples where the driver can build
a :class:`~.model.PageItem` from them directly (the hot path's budget, ``bench read``).
"""

from __future__ import annotations

from typing import NamedTuple

from .model import PageItem
from .rows import NodeRow


class NodeFields(NamedTuple):
    """A node row as :data:`~.rows.NODE_COLUMNS` selects it."""

    id: int
    sync_state: str
    item_count: int
    to_sync: bool
    sync_requested_position: int | None
    deleted: bool
    item_order: str | None

    def node(self) -> NodeRow:
        return NodeRow(
            self.id,
            self.sync_state,
            self.item_count,
            bool(self.to_sync),
            self.sync_requested_position is not None,
            bool(self.deleted),
            self.item_order,
        )


class ItemFields(NamedTuple):
    """An item row as :func:`~.rows.item_columns` selects it: :class:`PageItem`'s fields, in
    its order (``item_id`` is its ``id``, ``parsed`` its ``parsed_json``)."""

    item_id: str
    publisher: str | None
    payload: str | None
    parsed: str | None
    published_at: float
    updated_at: float
    parse_error: str | None


class NodeItemFields(NamedTuple):
    """A node row and one of its items (``item_id`` is ``None`` when the outer join found none)."""

    id: int
    sync_state: str
    item_count: int
    to_sync: bool
    sync_requested_position: int | None
    deleted: bool
    item_order: str | None
    item_id: str | None
    publisher: str | None
    payload: str | None
    parsed: str | None
    published_at: float
    updated_at: float
    parse_error: str | None

    def node(self) -> NodeRow:
        return NodeRow(
            self.id,
            self.sync_state,
            self.item_count,
            bool(self.to_sync),
            self.sync_requested_position is not None,
            bool(self.deleted),
            self.item_order,
        )

    def item(self) -> PageItem | None:
        if self.item_id is None:
            return None
        return PageItem(
            self.item_id,
            self.publisher,
            self.payload,
            self.parsed,
            self.published_at,
            self.updated_at,
            self.parse_error,
        )
