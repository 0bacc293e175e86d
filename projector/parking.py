"""Parked events (invariant 5): an event that cannot be applied waits, with its reason.

Events are parked per (account, service, node): once one event of a node is parked, the later
events of that node are parked behind it (applying them out of order would corrupt the node),
while every other node goes on. Parked events can be listed, retried in order, or dropped.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.projector.schema import parked_event

Scope = tuple[str, str, str]
parked = parked_event.c


def parked_scopes(connection: Connection, projector: str) -> dict[Scope, int]:
    """Each parked (account, service, node) of ``projector``, with its first parked position."""
    rows = connection.execute(
        sa.select(parked.account, parked.service, parked.node, sa.func.min(parked.position))
        .where(parked.projector == projector)
        .group_by(parked.account, parked.service, parked.node)
    )
    return {(account, service, node): first for account, service, node, first in rows}


def park(
    connection: Connection,
    projector: str,
    position: int,
    scope: Scope,
    error: str,
    *,
    now: float,
) -> None:
    """Park the event at ``position`` with ``error``."""
    connection.execute(
        parked_event.insert().values(
            projector=projector,
            position=position,
            account=scope[0],
            service=scope[1],
            node=scope[2],
            error=error[:4000],
            parked_at=now,
        )
    )


def list_parked(connection: Connection, projector: str | None = None) -> list[sa.Row[tuple]]:  # type: ignore[type-arg]
    """Parked events in position order (of one projector, or all)."""
    query = sa.select(parked_event).order_by(parked.projector, parked.position)
    if projector is not None:
        query = query.where(parked.projector == projector)
    return list(connection.execute(query))


def unpark(connection: Connection, projector: str, position: int) -> None:
    """Remove one parked event (applied by a retry, or dropped)."""
    connection.execute(
        parked_event.delete().where(parked.projector == projector, parked.position == position)
    )
