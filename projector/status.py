"""What ``pubsub-cache status`` reports: the log's head, each projector's checkpoint and its lag,
a rebuild in progress (apart: it is not a projector, and a finished one leaves no checkpoint),
parked events, nodes by sync state, rejected notifications, and each account an ingest daemon
serves (as it recorded it in ``ingest_account``). Read-only; safe while daemons run."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pubsub_cache.events.log import head_in
from pubsub_cache.events.schema import event_table
from pubsub_cache.projector.payloads import parse_error_count
from pubsub_cache.projector.schema import (
    SYNC_STATES,
    ingest_account,
    ingest_lease,
    parked_event,
    projector_checkpoint,
    pubsub_counter,
    pubsub_node,
)

#: The rebuild's checkpoint (projector/rebuild.py, which imports far more than a status needs).
REBUILD = "rebuild"


class CheckpointStatus(msgspec.Struct, frozen=True):
    """One projector checkpoint and how far behind the log it is."""

    name: str
    position: int
    lag_events: int
    lag_seconds: float
    """Age of the oldest event not applied yet (0 when caught up)."""
    lease_owner: str | None
    lease_expires_in: float | None


class AccountStatus(msgspec.Struct, frozen=True):
    """An account an ingest daemon serves: ``connecting``, ``connected``, ``standing-by``
    (another process serves it), ``failed`` (with the reason) or ``stopped``, since when; or
    ``stale`` (see :func:`_account`): recorded as served by a process that no longer holds the
    account's lease, so dead or cut off (the reason says what it had recorded)."""

    account: str
    state: str
    reason: str | None
    since: float
    """Unix time the account entered ``state``."""
    owner: str
    """The daemon that recorded it (``host:pid:token``)."""


class Status(msgspec.Struct, frozen=True):
    """The whole report."""

    head: int
    checkpoints: list[CheckpointStatus]
    parked: int
    nodes: dict[str, int]
    items: int
    rejected: int
    rebuild: CheckpointStatus | None = None
    """A rebuild (``replay``) begun and not finished: resumed by ``replay``, removed by
    :func:`~pubsub_cache.projector.rebuild.discard_rebuild`."""
    parse_errors: int = 0
    """Cached items whose payload could not be parsed (each with its reason)."""
    accounts: list[AccountStatus] = msgspec.field(default_factory=list)
    """Each account served by an ingest daemon, by JID."""


def read_status(connection: Connection, *, now: float | None = None) -> Status:
    """The status of the cache stored on ``connection``'s database."""
    now = time.time() if now is None else now
    head = head_in(connection)
    checkpoints, rebuild = [], None
    for row in connection.execute(sa.select(projector_checkpoint).order_by("name")):
        lag_seconds = 0.0
        if row.position < head:
            oldest = connection.execute(
                sa.select(sa.func.min(event_table.c.recorded_at)).where(
                    event_table.c.position > row.position
                )
            ).scalar()
            lag_seconds = max(0.0, now - oldest) if oldest is not None else 0.0
        expires = None if row.lease_expires is None else row.lease_expires - now
        point = CheckpointStatus(
            row.name, row.position, head - row.position, lag_seconds, row.lease_owner, expires
        )
        if row.name == REBUILD:
            rebuild = point
        else:
            checkpoints.append(point)
    nodes: dict[str, int] = dict.fromkeys(SYNC_STATES, 0)
    counted = sa.select(pubsub_node.c.sync_state, sa.func.count()).group_by(
        pubsub_node.c.sync_state
    )
    for state, count in connection.execute(counted):
        nodes[state] = count
    items = connection.execute(sa.select(sa.func.sum(pubsub_node.c.item_count))).scalar() or 0
    parked = connection.execute(
        sa.select(sa.func.count()).where(parked_event.c.projector != REBUILD)
    ).scalar_one()
    rejected = connection.execute(
        sa.select(sa.func.sum(pubsub_counter.c.value)).where(pubsub_counter.c.name == "rejected")
    ).scalar()
    return Status(
        head,
        checkpoints,
        parked,
        nodes,
        int(items),
        int(rejected or 0),
        rebuild,
        parse_errors=parse_error_count(connection),
        accounts=[
            _account(row, now)
            for row in connection.execute(
                sa.select(
                    ingest_account, ingest_lease.c.owner.label("holder"), ingest_lease.c.expires
                )
                .select_from(
                    ingest_account.outerjoin(
                        ingest_lease, ingest_lease.c.account == ingest_account.c.account
                    )
                )
                .order_by(ingest_account.c.account)
            )
        ],
    )


#: Seconds an account may say ``connecting`` without its lease: a daemon records it before it
#: takes the lease (or stands by, which it records too), well within a lease time (30 s).
CONNECTING_GRACE = 60.0


def _account(row: sa.Row[Any], now: float) -> AccountStatus:
    # A daemon killed with SIGKILL (or cut off from the database) leaves its rows saying
    # "connected" forever; the lease it had to hold to be connected tells the truth: gone,
    # expired, or another's. Only the serving states are judged: failed, standing-by and
    # stopped hold no lease.
    holds = row.holder == row.owner and row.expires is not None and row.expires > now
    serving = row.state == "connected" or (
        row.state == "connecting" and now - row.since > CONNECTING_GRACE
    )
    if serving and not holds:
        reason = f"recorded {row.state} by {row.owner}, which no longer holds the account's lease"
        return AccountStatus(row.account, "stale", reason, row.since, row.owner)
    return AccountStatus(row.account, row.state, row.reason, row.since, row.owner)


def as_builtins(status: Status) -> dict[str, Any]:
    """The report as plain data, for ``--json``."""
    data: dict[str, Any] = msgspec.to_builtins(status)
    return data
