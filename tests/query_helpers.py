"""Builders for the query tests: read-model rows written directly, as the projector would, and a
fake XMPP service standing in for the client's session (importable as ``query_helpers``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, T0
from pubsub_cache.events import Item, SyncRequested
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.jsontype import JSONType
from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.ranks import rank
from pubsub_cache.projector.schema import key_code, pubsub_content, pubsub_item, pubsub_node
from pubsub_cache.projector.search_text import pubsub_item_text
from pubsub_cache.xmpp.errors import XmppError
from pubsub_cache.xmpp.pubsub import ItemsReply, OnResult, PubsubClient

__all__ = [
    "ACCOUNT",
    "ITEM_ROWS",
    "KEY_NAMES",
    "NODE",
    "SERVICE",
    "FakeService",
    "ReadModelRows",
    "content_row",
    "sync_requests",
]

BASE = T0.timestamp()

#: ``pubsub_item`` with its content's columns, as the items held them before migration 0010:
#: what tests read items through (``ITEM_ROWS.c.payload``, ``.parsed``, ``.parser``...).
ITEM_ROWS = (
    sa.select(
        *(column for column in pubsub_item.c if column.name != "text"),
        pubsub_item_text.c.text,  # stored or, on SQLite, derived (projector/search_text.py)
        pubsub_content.c.payload,
        pubsub_content.c.parsed,
        pubsub_content.c.parse_error,
        pubsub_content.c.parser,
        pubsub_content.c.parser_version,
        pubsub_content.c.digest,
    )
    .select_from(
        pubsub_item.outerjoin(pubsub_content, pubsub_content.c.id == pubsub_item.c.content_id).join(
            pubsub_item_text, pubsub_item_text.c.id == pubsub_item.c.id
        )
    )
    .subquery("item_rows")
)

#: The item table of the revisions before 0010, with the columns tests write.
_LEGACY_ITEM = sa.table(
    "pubsub_item",
    *(sa.column(name) for name in ("node_id", "item_id", "publisher", "payload", "text")),
    sa.column("parsed", JSONType),
    *(sa.column(name) for name in ("published_at", "created_at", "updated_at")),
    *(sa.column(name) for name in ("created_position", "updated_position")),
    *(sa.column(name) for name in ("creation_rank", "modification_rank", "service_rank")),
)


def content_row(connection: sa.Connection, payload: str, parsed: Any = None) -> int:
    """The id of a ``pubsub_content`` row holding ``payload`` and ``parsed`` (made if absent)."""
    digest = content_digest(payload, f"test {parsed!r}", None)  # unique per (payload, parsed)
    found = connection.execute(
        sa.select(pubsub_content.c.id).where(pubsub_content.c.digest == digest)
    ).scalar()
    if found is not None:
        return int(found)
    return int(
        connection.execute(
            pubsub_content.insert()
            .values(digest=digest, parser="test", parsed=parsed, payload=payload)
            .returning(pubsub_content.c.id)
        ).scalar_one()
    )


#: ``pubsub_item_key.key`` codes by name (``tags[]`` for the elements of ``tags``).
KEY_NAMES = {
    key_code(SEARCHABLE_PATHS, path, element=element): f"{path}{'[]' if element else ''}"
    for path in SEARCHABLE_PATHS
    for element in (False, True)
}


class ReadModelRows:
    """Writes ``pubsub_node``/``pubsub_item`` rows; positions count up from 1 unless given."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.position = 0

    def next_position(self) -> int:
        self.position += 1
        return self.position

    def node(
        self,
        node: str = NODE,
        *,
        service: str = SERVICE,
        account: str = ACCOUNT,
        sync_state: str = "COMPLETED",
        to_sync: bool = True,
        type: str | None = "blog",
        subtype: str | None = None,
        deleted: bool = False,
        sync_requested: bool = False,
        configuration: dict[str, list[str]] | None = None,
    ) -> int:
        """A node row; returns its id."""
        position = self.next_position()
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    pubsub_node.insert()
                    .values(
                        account=account,
                        service=service,
                        node=node,
                        analyser="test",
                        type=type,
                        subtype=subtype,
                        to_sync=to_sync,
                        sync_state=sync_state,
                        sync_requested_position=position if sync_requested else None,
                        deleted=deleted,
                        configuration=configuration,
                        created_position=position,
                        updated_position=position,
                        updated_at=BASE,
                    )
                    .returning(pubsub_node.c.id)
                ).scalar_one()
            )

    def item(
        self,
        node_id: int,
        item_id: str,
        *,
        payload: str | None = None,
        parsed: Any = None,
        text: str | None = None,
        publisher: str | None = "juliet@capulet.lit",
        published: float | None = None,
        position: int | None = None,
        updated_position: int | None = None,
    ) -> None:
        """An item row (payload defaults to a small XML element naming the item)."""
        created = position if position is not None else self.next_position()
        self.position = max(self.position, created)
        payload = payload if payload is not None else f"<p xmlns='urn:test'>{item_id}</p>"
        with self.engine.begin() as connection:
            # Written in the shape of the database's revision (a migration test goes back).
            columns = {c["name"] for c in sa.inspect(connection).get_columns("pubsub_item")}
            if "content_id" in columns:
                table: Any = pubsub_item
                content: dict[str, Any] = {"content_id": content_row(connection, payload, parsed)}
            else:
                table, content = _LEGACY_ITEM, {"payload": payload, "parsed": parsed}
            connection.execute(
                table.insert().values(
                    node_id=node_id,
                    item_id=item_id,
                    publisher=publisher,
                    **content,
                    text=text,
                    published_at=BASE + (published if published is not None else created),
                    created_at=BASE + created,
                    updated_at=BASE + (updated_position or created),
                    created_position=created,
                    updated_position=updated_position or created,
                    # As the projector places items (projector/ranks.py); ties: by row id.
                    creation_rank=rank(created, 0),
                    modification_rank=rank(updated_position or created, 0),
                    service_rank=rank(created, 0),
                )
            )
            self._recount(connection, node_id)

    def items(self, node_id: int, item_ids: Sequence[str], **columns: Any) -> None:
        """Several items with the same columns, one position each, in order."""
        for item_id in item_ids:
            self.item(node_id, item_id, **columns)

    def set_state(self, node_id: int, sync_state: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                pubsub_node.update()
                .where(pubsub_node.c.id == node_id)
                .values(sync_state=sync_state)
            )

    @staticmethod
    def _recount(connection: sa.Connection, node_id: int) -> None:
        count = sa.select(sa.func.count()).where(pubsub_item.c.node_id == node_id).scalar_subquery()
        connection.execute(
            pubsub_node.update().where(pubsub_node.c.id == node_id).values(item_count=count)
        )


def sync_requests(log: EventLog) -> list[SyncRequested]:
    """The SyncRequested events in the log."""
    return [r.event for r in log.read(limit=100_000) if isinstance(r.event, SyncRequested)]


class FakeService(PubsubClient):
    """A pubsub service answering like Prosody (no RSM: the whole node), or failing as told."""

    def __init__(
        self,
        jid: str = ACCOUNT,
        items: Sequence[Item] = (),
        *,
        error: XmppError | None = None,
        delay: float = 0.0,
    ) -> None:
        self._jid = jid
        self.items = list(items)
        self.error = error
        self.delay = delay
        self.requests: list[tuple[str, str]] = []
        self.timeout = 10.0

    @property
    def jid(self) -> str:
        return self._jid

    async def get_items(
        self,
        service: str,
        node: str,
        *,
        max: int | None = None,
        after: str | None = None,
        max_items: int | None = None,
        timeout: float | None = None,
        on_result: OnResult | None = None,
    ) -> ItemsReply:
        return ItemsReply(items=await self._answer(service, node), rsm=None)

    async def get_item(
        self,
        service: str,
        node: str,
        item_id: str,
        *,
        timeout: float | None = None,
        on_result: OnResult | None = None,
    ) -> Item | None:
        return next((i for i in await self._answer(service, node) if i.id == item_id), None)

    async def _answer(self, service: str, node: str) -> list[Item]:
        self.requests.append((service, node))
        if self.delay:
            await anyio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return list(self.items)
