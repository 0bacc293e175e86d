"""Retrying and dropping parked events (``pubsub-cache parked retry|drop``).

A retry applies a node's parked events again in position order, each in a savepoint, and stops
at the first that still fails (its error is updated): the node's order is never broken.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events import decode
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector.analysers import AnalyserRegistry
from pubsub_cache.projector.apply import BatchApplier
from pubsub_cache.projector.parking import Scope, parked, parked_scopes, unpark
from pubsub_cache.projector.runner import Partition
from pubsub_cache.projector.schema import parked_event


def retry_parked(
    engine: Engine, registry: AnalyserRegistry, projector: str, *, scope: Scope | None = None
) -> tuple[int, int]:
    """Apply the parked events of ``projector`` again; returns (applied, still parked)."""
    # A partition's parked command spanning nodes applies to the nodes it owns, as it would
    # have in the partition's own batch.
    owns = Partition.of_checkpoint(projector).node_filter
    applied = 0
    with write_transaction(engine) as connection:
        scopes = list(parked_scopes(connection, projector))
    for current in scopes:
        if scope is not None and current != scope:
            continue
        with write_transaction(engine) as connection:
            rows = connection.execute(
                sa.select(parked.position)
                .where(
                    parked.projector == projector,
                    parked.account == current[0],
                    parked.service == current[1],
                    parked.node == current[2],
                )
                .order_by(parked.position)
            ).scalars()
            for position in list(rows):
                body = connection.execute(
                    sa.select(event_table.c.body).where(event_table.c.position == position)
                ).scalar()
                savepoint = connection.begin_nested()
                try:
                    if body is not None:  # compacted away since: nothing left to apply
                        applier = BatchApplier(connection, registry, owns=owns)
                        applier.apply(position, decode(body, position=position))
                        applier.finish()
                    savepoint.commit()
                except Exception as exc:
                    savepoint.rollback()
                    connection.execute(
                        parked_event.update()
                        .where(parked.projector == projector, parked.position == position)
                        .values(error=f"{type(exc).__name__}: {exc}"[:4000], parked_at=time.time())
                    )
                    break
                unpark(connection, projector, position)
                applied += 1
    with engine.connect() as connection:
        remaining = connection.execute(
            sa.select(sa.func.count()).where(parked.projector == projector)
        ).scalar_one()
    return applied, remaining


def drop_parked(engine: Engine, projector: str, *, position: int | None = None) -> int:
    """Forget parked events (one, or all of ``projector``); the log keeps them. Returns count."""
    condition = parked.projector == projector
    if position is not None:
        condition = sa.and_(condition, parked.position == position)
    with write_transaction(engine) as connection:
        return connection.execute(parked_event.delete().where(condition)).rowcount
