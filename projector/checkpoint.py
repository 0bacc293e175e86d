"""Checkpoints and leases: where each projector is in the log, and who may advance it.

A projector holds its lease (owner, expiry) and advances its checkpoint in the same transaction
as the rows it applies, so the read model and the checkpoint can never disagree (invariant 2).
The lease is taken by a conditional UPDATE at the start of every batch: a second projector on the
same checkpoint finds it held and waits; when the holder dies, the lease expires and the other
takes over. On PostgreSQL the UPDATE's row lock makes two contenders queue, and the loser's
condition is evaluated again after the winner commits; on SQLite, ``BEGIN IMMEDIATE`` already
serialises them.
"""

from __future__ import annotations

import os
import secrets
import socket

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pubsub_cache.projector.schema import projector_checkpoint

checkpoint = projector_checkpoint.c


def new_owner() -> str:
    """A lease owner id naming this process (host, pid) plus a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def ensure(connection: Connection, name: str) -> None:
    """Create checkpoint ``name`` at position 0 unless it exists."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    connection.execute(
        insert(projector_checkpoint).values(name=name, position=0).on_conflict_do_nothing()
    )


def acquire(connection: Connection, name: str, owner: str, *, ttl: float, now: float) -> int | None:
    """Take or renew the lease on checkpoint ``name``: its position, or ``None`` if held."""
    ensure(connection, name)
    taken = connection.execute(
        projector_checkpoint.update()
        .where(
            checkpoint.name == name,
            sa.or_(
                checkpoint.lease_owner == owner,
                checkpoint.lease_owner.is_(None),
                checkpoint.lease_expires < now,
            ),
        )
        .values(lease_owner=owner, lease_expires=now + ttl)
    )
    if taken.rowcount == 0:
        return None
    return int(
        connection.execute(
            sa.select(checkpoint.position).where(checkpoint.name == name)
        ).scalar_one()
    )


def advance(connection: Connection, name: str, position: int, *, now: float) -> None:
    """Move checkpoint ``name`` to ``position`` (inside the transaction that applied up to it)."""
    connection.execute(
        projector_checkpoint.update()
        .where(checkpoint.name == name)
        .values(position=position, updated_at=now)
    )


def release(connection: Connection, name: str, owner: str) -> None:
    """Give the lease up, so another projector can take over at once."""
    connection.execute(
        projector_checkpoint.update()
        .where(checkpoint.name == name, checkpoint.lease_owner == owner)
        .values(lease_owner=None, lease_expires=None)
    )


def reset(connection: Connection, name: str) -> None:
    """Forget checkpoint ``name`` (a rebuild starts again from position 0)."""
    connection.execute(projector_checkpoint.delete().where(checkpoint.name == name))
