"""One ingest per account: a lease in ``ingest_lease`` (account, owner, expires).

Two ingests of one account on one database would log every notification twice. So an ingest
takes its account's lease before it connects and renews it while it runs (every third of the
lease time), like the projector's checkpoint lease (``projector/checkpoint.py``): the row is taken
by a conditional UPDATE (ours already, or expired), in one write transaction, which on SQLite
holds the write lock and on PostgreSQL queues contenders on the row lock and evaluates the loser's
condition again after the winner commits.

A second ingest of the account stands by: it logs once who holds the account and tries again
until the lease expires (its holder died or hung) or is released (its holder stopped), then
takes over. A holder that died on this machine (same host, same PID namespace, its process gone,
as after a kill -9 that systemd restarts) is taken over at once rather than after the lease time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.events.db import write_transaction
from pubsub_cache.projector.schema import ingest_account, ingest_lease

lease = ingest_lease.c

#: Seconds a lease lasts unless renewed; an ingest renews it every third of that.
DEFAULT_TTL = 30.0


def new_owner(label: str = "") -> str:
    """``host:pid:token[:pidns]``: names this process, and tells a dead one on this machine.
    A ``label`` (such as ``shard-1-of-4``) starts the token, so that ``status`` shows it."""
    namespace = _pid_namespace()
    token = secrets.token_hex(4)
    if label:
        token = f"{label.replace(':', '-')}-{token}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{token}"
    return f"{owner}:{namespace}" if namespace else owner


@dataclass(frozen=True)
class Holder:
    """Who holds an account's lease, and for how much longer."""

    owner: str
    expires_in: float


@dataclass
class IngestLease:
    """The lease on ``account``'s ingest, as held (or wanted) by ``owner``."""

    engine: Engine
    account: str
    owner: str = field(default_factory=new_owner)

    def take(self, *, ttl: float = DEFAULT_TTL, now: float | None = None) -> Holder | None:
        """Take or renew the lease for ``ttl`` seconds: ``None`` when it is ours now, else who
        holds it. Raises the database's error when it cannot be reached."""
        now = time.time() if now is None else now
        with write_transaction(self.engine) as connection:
            return self._take(connection, ttl, now)

    def release(self) -> None:
        """Give the lease up (if ours), so that a standing-by ingest takes over at once."""
        with write_transaction(self.engine) as connection:
            connection.execute(
                ingest_lease.delete().where(
                    lease.account == self.account, lease.owner == self.owner
                )
            )

    def _take(self, connection: Connection, ttl: float, now: float) -> Holder | None:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        created = connection.execute(
            insert(ingest_lease)
            .values(account=self.account, owner=self.owner, expires=now + ttl)
            .on_conflict_do_nothing()
        )
        if created.rowcount == 1:
            return None
        taken = connection.execute(
            ingest_lease.update()
            .where(
                lease.account == self.account,
                sa.or_(lease.owner == self.owner, lease.expires < now),
            )
            .values(owner=self.owner, expires=now + ttl)
        )
        if taken.rowcount == 1:
            return None
        row = connection.execute(
            sa.select(lease.owner, lease.expires).where(lease.account == self.account)
        ).one()
        if _died_here(row.owner):
            connection.execute(
                ingest_lease.update()
                .where(lease.account == self.account, lease.owner == row.owner)
                .values(owner=self.owner, expires=now + ttl)
            )
            return None
        return Holder(row.owner, row.expires - now)


def publish_states(
    engine: Engine, owner: str, states: Mapping[str, tuple[str, str | None, float] | None]
) -> None:
    """Record each account's ``(state, reason, since)`` in ``ingest_account`` as served by
    ``owner`` (``None``: no longer served, the row goes). Another process's row is overwritten
    only by ``connected`` (which holds the lease: it serves the account now) or when it says
    ``stopped`` or ``failed``: a process standing by, or stopping while it stood by, or about
    to take the lease, never hides the one that serves the account."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    rows = ingest_account.c
    with write_transaction(engine) as connection:
        for account, state in states.items():
            if state is None:
                connection.execute(
                    ingest_account.delete().where(rows.account == account, rows.owner == owner)
                )
                continue
            values = {"owner": owner, "state": state[0], "reason": state[1], "since": state[2]}
            upsert = insert(ingest_account).values(account=account, **values)
            connection.execute(
                upsert.on_conflict_do_update(
                    index_elements=[rows.account],
                    set_=values,
                    where=sa.or_(
                        rows.owner == owner,
                        upsert.excluded.state == "connected",
                        rows.state.in_(("stopped", "failed")),
                    ),
                )
            )


def sweep_states(engine: Engine, owner: str, *, now: float | None = None) -> int:
    """Remove the ``ingest_account`` rows that dead daemons left behind: every row of a process
    of this machine that no longer exists (a kill -9), and elsewhere the rows saying
    ``connected`` whose lease their owner no longer holds. A starting daemon calls it, so that
    ``status`` keeps no account that a dead daemon served and no live one serves now (its rows
    for the accounts it serves it overwrites anyway). Returns how many rows went."""
    now = time.time() if now is None else now
    rows = ingest_account.c
    held = sa.select(lease.account).where(
        lease.account == rows.account, lease.owner == rows.owner, lease.expires > now
    )
    with write_transaction(engine) as connection:
        found = connection.execute(
            sa.select(rows.account, rows.owner, rows.state, held.exists().label("held")).where(
                rows.owner != owner
            )
        ).all()
        gone = [
            (row.account, row.owner)
            for row in found
            if _died_here(row.owner) or (row.state == "connected" and not row.held)
        ]
        for account, dead in gone:
            connection.execute(
                ingest_account.delete().where(rows.account == account, rows.owner == dead)
            )
    return len(gone)


def _pid_namespace() -> str:
    # Two containers may share a host name; their PIDs mean something only in their namespace.
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    return ""


def _died_here(owner: str) -> bool:
    """Whether ``owner`` names a process of this host and PID namespace that no longer exists."""
    parts = owner.split(":")
    namespace = _pid_namespace()
    if len(parts) != 4 or not namespace or parts[0] != socket.gethostname():
        return False
    if parts[3] != namespace or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False
