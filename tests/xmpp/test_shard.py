"""``ingest --shard I/N`` (issue 13, point 3): the configured accounts split between processes
by a hash of each bare JID, and the per-account lease keeping every account in one process
even when two shardings overlap. Against the real Prosody, on PostgreSQL (what sharding is for)."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import ItemsPublished
from pubsub_cache.ops.cli_daemon import serve_accounts
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.shard import Shard, shard_of
from pubsub_cache.projector.status import AccountStatus, read_status
from pubsub_cache.xmpp.accounts import IngestPool
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import XmppAccount
from xmpp_fixtures import FAST, cached_items, cached_node, eventually, password_of

pytestmark = [pytest.mark.anyio]

#: Short leases: a shard that stops is noticed by a standing-by process within a second.
LEASED = dataclasses.replace(FAST, lease_ttl=1.5)


def test_an_account_s_shard_is_a_stable_hash_of_its_jid_not_its_place_in_the_list() -> None:
    jids = [f"user{number}@example.org" for number in range(400)]
    # Pinned: a change of the hash would move the accounts of every running deployment.
    names = ["romeo@montague.lit", "juliet@capulet.lit", "tybalt@capulet.lit"]
    assert [shard_of(jid, 4) for jid in names] == [4, 4, 3]
    shards = [Shard(index, 4) for index in range(1, 5)]
    chosen = [shard.select(jid_accounts(jids)) for shard in shards]
    assert sorted(a.jid for part in chosen for a in part) == sorted(jids)  # each exactly once
    assert all(len(part) > 60 for part in chosen)  # and spread (100 each on average)
    grown = jid_accounts([f"new{number}@example.org" for number in range(50)] + jids)
    for shard, part in zip(shards, chosen, strict=True):
        assert {a.jid for a in part} <= {a.jid for a in shard.select(grown)}


@dataclasses.dataclass(frozen=True)
class _Jid:
    jid: str


def jid_accounts(jids: Sequence[str]) -> list[_Jid]:
    return [_Jid(jid) for jid in jids]


@pytest.mark.parametrize("value", ["0/2", "3/2", "a/b", "1/0", "2", "-1/2"])
def test_a_bad_shard_is_a_usage_error_in_one_line(value: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PUBSUB_CACHE_JID": "a@b.c", "PUBSUB_CACHE_PASSWORD": "x"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pubsub-cache"), "ingest", "--shard", value],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--shard" in result.stderr
    assert "Traceback" not in result.stderr


def register(prosody: LocalProsody, count: int) -> list[XmppAccount]:
    tag = uuid.uuid4().hex[:6]
    users = [f"shard-{tag}-{number}" for number in range(count)]
    prosody.register_many(users, password_of("shard"))
    return [
        XmppAccount(
            jid=prosody.jid(user),
            password=password_of("shard"),
            host=prosody.host,
            port=prosody.port,
            tls="none",
        )
        for user in users
    ]


async def start_shard(
    group: anyio.abc.TaskGroup,
    engine: Engine,
    accounts: Sequence[XmppAccount],
    shard: Shard,
    *,
    projector: bool = False,
) -> tuple[IngestPool, anyio.CancelScope]:
    """What ``pubsub-cache ingest --shard I/N`` runs, started in ``group``: its own pool and
    owner (a process of its own as far as the leases know) serving this shard's accounts;
    cancelling the scope returned stops it as SIGTERM would."""
    scope = anyio.CancelScope()
    serve = functools.partial(
        serve_accounts,
        engine,
        shard.select(accounts),
        signals=False,
        options=LEASED,
        projector=projector,
        shard=shard,
    )

    async def run(*, task_status: anyio.abc.TaskStatus[IngestPool]) -> None:
        with scope:
            await serve(task_status=task_status)

    with anyio.fail_after(10):
        pool: IngestPool = await group.start(run)
    return pool, scope


def recorded(engine: Engine) -> dict[str, AccountStatus]:
    with engine.connect() as connection:
        return {account.account: account for account in read_status(connection).accounts}


def status_text(engine: Engine) -> str:
    """What ``pubsub-cache status`` prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    script = str(Path(sys.executable).parent / "pubsub-cache")
    result = subprocess.run(
        [script, "status"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def connected_in(pool: IngestPool) -> set[str]:
    return {state.jid for state in pool.states() if state.state == "connected"}


@pytest.mark.xmpp
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_shards_serve_every_account_once_and_overlapping_shards_stand_by(
    prosody: LocalProsody, publisher: PubsubClient, engine: Engine, node_name: str
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    accounts = register(prosody, 12)
    jids = {account.jid for account in accounts}
    first, second, third = Shard(1, 2), Shard(2, 2), Shard(1, 3)
    assert first.select(accounts)
    assert second.select(accounts)

    async with anyio.create_task_group() as group:
        one, _ = await start_shard(group, engine, accounts, first, projector=True)
        two, stop_two = await start_shard(group, engine, accounts, second)
        await eventually(lambda: connected_in(one) | connected_in(two) == jids, timeout=30)
        assert not connected_in(one) & connected_in(two)  # each account once
        assert {state.jid for state in one.states()} == {a.jid for a in first.select(accounts)}

        # A third process with another N overlaps both: the leases keep every account single.
        overlap = {a.jid for a in third.select(accounts)}
        assert overlap
        three, stop_three = await start_shard(group, engine, accounts, third)
        await eventually(
            lambda: {s.jid for s in three.states() if s.state == "standing-by"} == overlap
        )
        assert connected_in(three) == set()
        assert connected_in(one) | connected_in(two) == jids
        stop_three.cancel()

        # status names the process (and shard) serving each account
        await eventually(lambda: {a.state for a in recorded(engine).values()} == {"connected"})
        owners = {jid: account.owner or "" for jid, account in recorded(engine).items()}
        assert all(":shard-1-of-2-" in owners[a.jid] for a in first.select(accounts))
        assert all(":shard-2-of-2-" in owners[a.jid] for a in second.select(accounts))
        # In a thread: the shards' leases (1.5 s) must be renewed while the CLI starts.
        shown = await anyio.to_thread.run_sync(status_text, engine)
        for account in accounts:
            assert re.search(rf"^{re.escape(account.jid)} +connected ", shown, re.M), shown
            assert f"recorded by {owners[account.jid]}" in shown

        # every view is served: one publish reaches all 12 accounts' read models... once each
        for account in accounts:
            pool = one if first.serves(account.jid) else two
            pool.ingests[account.jid].request_sync(service, node_name, "test")
        await eventually(
            lambda: all(
                (cached_node(engine, jid, service, node_name) or {}).get("sync_state")
                == "COMPLETED"
                for jid in jids
            ),
            timeout=30,
        )
        await publisher.publish(service, node_name, "a", "<p xmlns='urn:test'>1</p>")
        await eventually(
            lambda: all(
                set(cached_items(engine, jid, service, node_name)) == {"a"} for jid in jids
            ),
            timeout=30,
        )
        # ... and each account's notification is in the log once: one process ingests it.
        published = [
            record.event.account
            for record in EventLog(engine).read(limit=100_000)
            if isinstance(record.event, ItemsPublished)
            and [item.id for item in record.event.items] == ["a"]
        ]
        assert sorted(published) == sorted(jids)

        # One shard stops: its accounts stay unserved (no takeover across shards), the others
        # go on undisturbed.
        sessions = {jid: one.ingests[jid].sessions for jid in connected_in(one)}
        stop_two.cancel()
        gone = {a.jid for a in second.select(accounts)}
        await eventually(lambda: {recorded(engine)[jid].state for jid in gone} == {"stopped"})
        assert {state.jid for state in one.states()} == jids - gone
        assert {jid: one.ingests[jid].sessions for jid in connected_in(one)} == sessions
        group.cancel_scope.cancel()
