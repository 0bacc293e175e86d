"""What ``pubsub-cache status`` reports: the log's head, each projector's checkpoint and its lag,
a rebuild in progress (apart: it is not a projector, and a finished one leaves no checkpoint),
parked events, nodes by sync state, rejected notifications, and each account: its ingest's
state (as the daemon recorded it in ``ingest_account``), its nodes by sync state, its items and
its lag. Read-only; safe while daemons run.

The accounts are those the database knows: recorded by an ingest daemon, or with cached nodes,
or with events not applied yet. An account configured but never seen by a daemon of this
database is not listed (the status reads the database, not the settings: each ingest shard may
have its own accounts file). One the database knows and no daemon records (removed from the
accounts file, its daemon killed and its row swept, a library-only user) shows as ``unknown``.

Cheap on a big database: nodes are counted in one pass over ``pubsub_node`` (per account and
state, the whole cache's figures summed from it), and the lag reads only the log past the lowest
checkpoint (a range of its primary key)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
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
    """An account and its ingest: ``connecting``, ``connected``, ``standing-by`` (another
    process serves it), ``failed`` (with the reason) or ``stopped``, since when; or ``stale``
    (see :func:`_account`): recorded as served by a process that no longer holds the account's
    lease, so dead or cut off (the reason says what it had recorded); or ``unknown``: no ingest
    daemon records it (``since`` and ``owner`` are then ``None``)."""

    account: str
    state: str
    reason: str | None
    since: float | None
    """Unix time the account entered ``state``."""
    owner: str | None
    """The daemon that recorded it (``host:pid:token``)."""
    nodes: dict[str, int] = msgspec.field(default_factory=dict)
    """The account's cached nodes by sync state (deleted ones included, as in :class:`Status`)."""
    items: int = 0
    """Items cached for the account."""
    lag_events: int = 0
    """The account's events past the lowest projector checkpoint: not applied yet (with
    partitions, by one of them at least)."""
    lag_seconds: float = 0.0
    """Age of the oldest of those (0 when caught up)."""


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
    """Each account the database knows (see the module's docstring), by JID."""


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
    applied = min((point.position for point in checkpoints), default=0)
    figures = _figures(connection, applied=applied, head=head, now=now)
    nodes: dict[str, int] = dict.fromkeys(SYNC_STATES, 0)
    for account in figures.values():
        for state, count in account.nodes.items():
            nodes[state] = nodes.get(state, 0) + count
    parked = connection.execute(
        sa.select(sa.func.count()).where(parked_event.c.projector != REBUILD)
    ).scalar_one()
    rejected = connection.execute(
        sa.select(sa.func.sum(pubsub_counter.c.value)).where(pubsub_counter.c.name == "rejected")
    ).scalar()
    recorded = {
        row.account: _account(row, now)
        for row in connection.execute(
            sa.select(
                ingest_account, ingest_lease.c.owner.label("holder"), ingest_lease.c.expires
            ).select_from(
                ingest_account.outerjoin(
                    ingest_lease, ingest_lease.c.account == ingest_account.c.account
                )
            )
        )
    }
    accounts = []
    for jid in sorted(recorded.keys() | figures.keys()):
        found = figures.get(jid) or _Figures()
        known = recorded.get(jid) or AccountStatus(jid, "unknown", UNKNOWN, None, None)
        accounts.append(
            msgspec.structs.replace(
                known,
                nodes=found.nodes,
                items=found.items,
                lag_events=found.lag_events,
                lag_seconds=found.lag_seconds,
            )
        )
    return Status(
        head,
        checkpoints,
        parked,
        nodes,
        sum(account.items for account in figures.values()),
        int(rejected or 0),
        rebuild,
        parse_errors=parse_error_count(connection),
        accounts=accounts,
    )


#: Why an account is ``unknown``.
UNKNOWN = "no ingest daemon records it"


@dataclass
class _Figures:
    """What the read model and the log say of one account."""

    nodes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYNC_STATES, 0))
    items: int = 0
    lag_events: int = 0
    lag_seconds: float = 0.0


def _figures(connection: Connection, *, applied: int, head: int, now: float) -> dict[str, _Figures]:
    """Each account's nodes by state, items, and events past position ``applied``."""
    figures: dict[str, _Figures] = defaultdict(_Figures)
    node = pubsub_node.c
    # State first: grouped by account first, SQLite walks the (account, service, node) index
    # and looks every row up (5x the CPU of a table scan at 100k nodes; PostgreSQL hashes either).
    counted = sa.select(
        node.account, node.sync_state, sa.func.count(), sa.func.sum(node.item_count)
    ).group_by(node.sync_state, node.account)
    for account, state, count, items in connection.execute(counted):
        figures[account].nodes[state] = count
        figures[account].items += int(items or 0)
    if applied < head:
        event = event_table.c
        lagging = (
            sa.select(event.account, sa.func.count(), sa.func.min(event.recorded_at))
            .where(event.position > applied)
            .group_by(event.account)
        )
        for account, count, oldest in connection.execute(lagging):
            figures[account].lag_events = count
            figures[account].lag_seconds = max(0.0, now - oldest)
    return dict(figures)


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
