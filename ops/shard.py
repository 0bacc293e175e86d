"""``--shard I/N``: which of the configured accounts this ingest process serves.

An account belongs to shard ``hash(bare JID) mod N + 1``, the hash being the first 8 bytes of
its SHA-256: the same on every machine and Python (unlike ``hash()``), and independent of the
accounts file's order, so that adding or removing an account never moves the others to another
shard. Processes given ``1/N`` … ``N/N`` with the same accounts file serve every account once.

Sharding only chooses which accounts a process *tries*: the per-account lease
(``xmpp/lease.py``) is what guarantees one ingest per account, so two processes whose shards
overlap (say ``1/2`` and ``1/3``, after a botched change of N) still ingest each account once,
the second one standing by. A shard whose process dies is not taken over by the other shards:
its accounts wait for that process (systemd restarts it, or the lease expires and the same
shard started elsewhere takes them). It is meant for PostgreSQL, where the processes may run on
different machines; it works on SQLite too (processes of one machine, one writer at a time).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import click


class _HasJid(Protocol):
    @property
    def jid(self) -> str: ...


Account = TypeVar("Account", bound=_HasJid)

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_of(jid: str, count: int) -> int:
    """The shard (1 to ``count``) the bare ``jid`` belongs to."""
    digest = hashlib.sha256(jid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (both from 1)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: I must be between 1 and N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def serves(self, jid: str) -> bool:
        """Whether the account ``jid`` is this shard's."""
        return shard_of(jid, self.count) == self.index

    def select(self, accounts: Iterable[Account]) -> list[Account]:
        """This shard's accounts, in their order."""
        return [account for account in accounts if self.serves(account.jid)]


class ShardType(click.ParamType[Shard, Any]):
    """``I/N`` with 1 ≤ I ≤ N: anything else is a usage error (exit 2, one line)."""

    name = "I/N"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Shard:
        """The shard, or a usage error saying what is wrong."""
        if isinstance(value, Shard):
            return value
        match = _SHARD.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not I/N (e.g. 1/4: the first of 4 shards)", param, ctx)
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 1 <= index <= count:
            self.fail(f"{value!r}: I must be between 1 and N, and N at least 1", param, ctx)
        return Shard(index, count)


shard_option = click.option(
    "--shard",
    type=ShardType(),
    default=None,
    help="Serve only the configured accounts of shard I of N (by a hash of each bare JID, so "
    "adding an account moves no other); run 1/N ... N/N, one per process or machine. Meant for "
    "PostgreSQL; a per-account lease keeps each account in one process even if shards overlap.",
)
