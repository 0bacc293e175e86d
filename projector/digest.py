"""A digest of the read model, to check that a rebuild equals what was followed live.

Rows are identified by their natural keys (account, service, node, item id), never by surrogate
ids, which differ between databases and rebuilds: an item's content (``pubsub_content``) is
hashed through its join, so two models whose contents got other ids hash equal. Lease, parking
and wall-clock columns are left out: they describe the projector, not the cache. So is the item's
``text``: the parser makes it from the content, which is hashed, and SQLite stores it only when
the parsed JSON cannot give it back (``projector/search_text.py``), so that a model moved from
one engine to the other hashes the same.
"""

from __future__ import annotations

import hashlib

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.projector.schema import pubsub_content, pubsub_counter, pubsub_item, pubsub_node

_NODE_COLUMNS = [
    column for column in pubsub_node.c if column.name not in ("id", "sync_requested_position")
]
_ITEM_COLUMNS = [
    column for column in pubsub_item.c if column.name not in ("id", "node_id", "content_id", "text")
]
_CONTENT_COLUMNS = [column for column in pubsub_content.c if column.name != "id"]


def read_model_digest(connection: Connection, *, tables: dict[str, sa.Table] | None = None) -> str:
    """A hex digest of every node, item and counter (of ``tables``, default the live ones)."""
    node, item, counter, content = (
        (
            tables["pubsub_node"],
            tables["pubsub_item"],
            tables["pubsub_counter"],
            tables["pubsub_content"],
        )
        if tables
        else (pubsub_node, pubsub_item, pubsub_counter, pubsub_content)
    )
    digest = hashlib.sha256()
    encode = msgspec.json.Encoder(order="sorted").encode
    node_columns = [node.c[c.name] for c in _NODE_COLUMNS]
    key = (node.c.account, node.c.service, node.c.node)
    for row in connection.execute(sa.select(*node_columns).order_by(*key)):
        digest.update(encode(_normal(row)))
    item_columns = [item.c[c.name] for c in _ITEM_COLUMNS]
    content_columns = [content.c[c.name] for c in _CONTENT_COLUMNS]
    query = (
        sa.select(*key, *item_columns, *content_columns)
        .join_from(item, node, item.c.node_id == node.c.id)
        .outerjoin(content, content.c.id == item.c.content_id)
        .order_by(*key, item.c.item_id)
    )
    for row in connection.execute(query):
        digest.update(encode(_normal(row)))
    for row in connection.execute(sa.select(counter).order_by(counter.c.account, counter.c.name)):
        digest.update(encode(_normal(row)))
    return digest.hexdigest()


def _normal(row: sa.Row[tuple]) -> list[object]:  # type: ignore[type-arg]
    # JSON columns come back as dicts (PostgreSQL) or text (SQLite): compare them as data.
    return [_plain(value) for value in row]


def _plain(value: object) -> object:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
