"""Node listings and states of one account's view, and how far the projector has got."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.projector.schema import SYNC_STATES, projector_checkpoint, pubsub_node

from .errors import InvalidQuery
from .model import NodeState, utc

_node = pubsub_node.c


def list_nodes(
    engine: Engine,
    account: str,
    *,
    service: str | None = None,
    type: str | None = None,
    subtype: str | None = None,
    sync_state: str | None = None,
    to_sync: bool | None = None,
    include_deleted: bool = False,
) -> list[NodeState]:
    """The account's nodes matching every filter given, by service then node name."""
    if sync_state is not None and sync_state not in SYNC_STATES:
        raise InvalidQuery(f"sync state {sync_state!r} is not one of {', '.join(SYNC_STATES)}")
    statement = sa.select(pubsub_node).where(_node.account == account)
    for column, value in (
        (_node.service, service),
        (_node.type, type),
        (_node.subtype, subtype),
        (_node.sync_state, sync_state),
        (_node.to_sync, to_sync),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if not include_deleted:
        statement = statement.where(_node.deleted == sa.false())
    statement = statement.order_by(_node.service, _node.node)
    with engine.connect() as connection:
        return [_state(row._mapping) for row in connection.execute(statement)]


def node_state(engine: Engine, account: str, service: str, node: str) -> NodeState | None:
    """The node as the account's view knows it, or ``None`` when it was never seen."""
    statement = sa.select(pubsub_node).where(
        _node.account == account, _node.service == service, _node.node == node
    )
    with engine.connect() as connection:
        row = connection.execute(statement).first()
    return None if row is None else _state(row._mapping)


#: The live projector's checkpoint; its partitions are ``main/0-of-2``... (a rebuild has its
#: own, ``rebuild``, which readers of the live tables must not wait for).
LIVE_PROJECTOR = "main"


def checkpoint_position(engine: Engine, projector: str | None = LIVE_PROJECTOR) -> int | None:
    """The position all of ``projector``'s checkpoints have reached (the lowest), ``None`` when
    it has none: the one named so and its partitions (the name, a separator, anything).
    ``None`` for ``projector`` takes every checkpoint.
    """
    statement = sa.select(projector_checkpoint.c.name, projector_checkpoint.c.position)
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    positions = [position for name, position in rows if _belongs(name, projector)]
    return min(positions) if positions else None


def _belongs(name: str, projector: str | None) -> bool:
    if projector is None or name == projector:
        return True
    return name.startswith(projector) and not name[len(projector)].isalnum()


def _state(row: Any) -> NodeState:
    configuration = row["configuration"]
    return NodeState(
        account=row["account"],
        service=row["service"],
        node=row["node"],
        analyser=row["analyser"],
        type=row["type"],
        subtype=row["subtype"],
        to_sync=bool(row["to_sync"]),
        sync_state=row["sync_state"],
        sync_reason=row["sync_reason"],
        sync_at=utc(row["sync_at"]),
        sync_requested=row["sync_requested_position"] is not None,
        subscribed=bool(row["subscribed"]),
        subscription=row["subscription"],
        item_count=row["item_count"],
        deleted=bool(row["deleted"]),
        redirect=row["redirect"],
        updated_at=utc(row["updated_at"]),
        configuration=configuration if isinstance(configuration, dict) else None,
    )


def configured_max_items(state: NodeState | None) -> int | None:
    """The node's ``pubsub#max_items`` from its cached configuration form, when known."""
    if state is None or not state.configuration:
        return None
    values: Sequence[Any] = state.configuration.get("pubsub#max_items") or ()
    for value in values:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return None
