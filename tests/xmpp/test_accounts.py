"""Many accounts, one daemon (issue 13) against the real Prosody: every account's view in one
process, one account's failure beside the others, and a reload of the accounts file that adds
and removes accounts without disturbing the rest."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from pubsub_cache.ops.cli_daemon import serve_accounts, xmpp_accounts
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.metrics import render
from pubsub_cache.ops.settings import load_settings
from pubsub_cache.projector.schema import ingest_lease
from pubsub_cache.projector.status import AccountStatus, read_status
from pubsub_cache.xmpp.accounts import AccountState, IngestPool
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import XmppAccount
from xmpp_fixtures import FAST, account_on, cached_items, cached_node, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

#: Accounts served at once in the suite (the benchmark takes 200 and more).
MANY = 20


def entry(title: str) -> str:
    return f'<entry xmlns="http://www.w3.org/2005/Atom"><title>{title}</title></entry>'


def register(prosody: LocalProsody, count: int) -> list[XmppAccount]:
    tag = uuid.uuid4().hex[:6]
    return [account_on(prosody, f"many-{tag}-{number}") for number in range(count)]


@asynccontextmanager
async def running_pool(
    engine: Engine,
    accounts: Sequence[XmppAccount],
    reload: Callable[[], Sequence[XmppAccount]] | None = None,
) -> AsyncIterator[IngestPool]:
    """The daemon (ingests and projector) as ``pubsub-cache run`` runs it with an accounts
    file, in this event loop; stopped on leaving the block."""
    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            serve = functools.partial(
                serve_accounts, engine, accounts, reload=reload, signals=False, options=FAST
            )
            pool = await group.start(serve)
        try:
            yield pool
        finally:
            group.cancel_scope.cancel()


def recorded(engine: Engine) -> dict[str, AccountStatus]:
    """Each account's state as ``pubsub-cache status`` (another process) reads it."""
    with engine.connect() as connection:
        return {account.account: account for account in read_status(connection).accounts}


def by_jid(pool: IngestPool) -> dict[str, AccountState]:
    return {state.jid: state for state in pool.states()}


async def settled(pool: IngestPool, *, timeout: float = 30.0) -> dict[str, AccountState]:
    """The states once no account is still connecting."""
    with anyio.fail_after(timeout):
        await pool.wait_until(lambda states: all(s.state != "connecting" for s in states))
    return by_jid(pool)


async def request_syncs(
    engine: Engine, accounts: Sequence[XmppAccount], service: str, node: str
) -> None:
    now = datetime.now(UTC)
    requests = [
        SyncRequested(account=account.jid, service=service, node=node, observed_at=now)
        for account in accounts
    ]
    await anyio.to_thread.run_sync(EventLog(engine).append, requests)


def synced_everywhere(
    engine: Engine, accounts: Sequence[XmppAccount], service: str, node: str, ids: set[str]
) -> Callable[[], bool]:
    def check() -> bool:
        return all(
            set(cached_items(engine, account.jid, service, node)) == ids
            and (cached_node(engine, account.jid, service, node) or {}).get("sync_state")
            == "COMPLETED"
            for account in accounts
        )

    return check


async def test_many_accounts_in_one_process_each_see_the_shared_node_and_a_bad_one_fails_alone(
    prosody: LocalProsody, publisher: PubsubClient, engine: Engine, node_name: str
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "old", entry("before the daemon"))
    good = register(prosody, MANY)
    wrong = XmppAccount(
        jid=prosody.jid(f"wrong-{uuid.uuid4().hex[:6]}"),
        password="not the password",
        host=prosody.host,
        port=prosody.port,
        tls="none",
    )
    prosody.register(wrong.jid.partition("@")[0], "the password")
    ids = [account.jid for account in good]

    async with running_pool(engine, [*good[:5], wrong, *good[5:]]) as pool:
        states = await settled(pool)
        assert {jid for jid, s in states.items() if s.state == "connected"} == {
            account.jid for account in good
        }
        assert states[wrong.jid].state == "failed"
        assert "authentication failed" in (states[wrong.jid].reason or "")

        await request_syncs(engine, [*good, wrong], service, node_name)
        await eventually(synced_everywhere(engine, good, service, node_name, {"old"}), timeout=30)

        await publisher.publish(service, node_name, "a", entry("fanned out"))
        await eventually(synced_everywhere(engine, good, service, node_name, {"old", "a"}))
        assert all(_item(engine, account.jid, "a") == entry("fanned out") for account in good)
        assert cached_items(engine, wrong.jid, service, node_name) == {}
        assert (cached_node(engine, wrong.jid, service, node_name) or {})["sync_state"] == "NONE"
        assert by_jid(pool)[wrong.jid].state == "failed"  # and the others never noticed
        assert all(pool.ingests[account.jid].sessions == 1 for account in good)

        def shown() -> dict[str, str]:
            return {jid: account.state for jid, account in recorded(engine).items()}

        await eventually(
            lambda: shown() == {**dict.fromkeys(ids, "connected"), wrong.jid: "failed"}
        )
        assert "authentication failed" in (recorded(engine)[wrong.jid].reason or "")
        with engine.connect() as connection:
            metrics = render(read_status(connection))
        assert f'pubsub_cache_account_state{{account="{wrong.jid}",state="failed"}} 1' in metrics

        prosody.register(wrong.jid.partition("@")[0], wrong.password)  # the password is fixed
        assert pool.update([*good, wrong]) == ([], [])  # a reload tries a failed account again
        await eventually(lambda: shown()[wrong.jid] == "connected")
        assert all(pool.ingests[account.jid].sessions == 1 for account in good)
    assert set(shown().values()) == {"stopped"}  # a daemon that stopped says so


def _item(engine: Engine, account: str, item: str) -> str | None:
    from query_helpers import ITEM_ROWS

    from pubsub_cache.projector.schema import pubsub_node

    query = (
        sa.select(ITEM_ROWS.c.payload)
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(pubsub_node.c.account == account, ITEM_ROWS.c.item_id == item)
    )
    with engine.connect() as connection:
        payload: str | None = connection.execute(query).scalar_one_or_none()
    return payload


def write_accounts(path: Path, prosody: LocalProsody, accounts: Sequence[XmppAccount]) -> None:
    lines = []
    for account in accounts:
        secret = path.parent / f"{account.jid}.secret"
        secret.write_text(account.password + "\n")
        lines.append(
            f'[[account]]\njid = "{account.jid}"\npassword_file = "{secret.name}"\n'
            f'xmpp_host = "{prosody.host}"\nxmpp_port = {prosody.port}\nxmpp_tls = "none"\n'
        )
    path.write_text("\n".join(lines))


async def test_a_reload_of_the_accounts_file_adds_and_removes_accounts_and_leaves_the_rest(
    prosody: LocalProsody,
    publisher: PubsubClient,
    engine: Engine,
    node_name: str,
    tmp_path: Path,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "old", entry("before"))
    first, kept, later = register(prosody, 3)
    accounts_file = tmp_path / "accounts.toml"
    write_accounts(accounts_file, prosody, [first, kept])
    environ = {"PUBSUB_CACHE_ACCOUNTS_FILE": str(accounts_file), "HOME": str(tmp_path)}

    def reload() -> list[XmppAccount]:  # what SIGHUP calls in the daemon
        return xmpp_accounts(load_settings(environ))

    async with running_pool(engine, reload(), reload) as pool:
        assert {s.state for s in (await settled(pool)).values()} == {"connected"}
        kept_ingest = pool.ingests[kept.jid]

        write_accounts(accounts_file, prosody, [kept, later])
        assert await pool.reload() == ([later.jid], [first.jid])
        states = await settled(pool)
        assert set(states) == {kept.jid, later.jid}
        assert states[later.jid].state == "connected"
        assert pool.ingests[kept.jid] is kept_ingest
        assert kept_ingest.sessions == 1

        def leased() -> set[str]:
            with engine.connect() as connection:
                return set(connection.execute(sa.select(ingest_lease.c.account)).scalars())

        await eventually(lambda: first.jid not in leased())  # released: stopped for good
        await eventually(lambda: set(recorded(engine)) == {kept.jid, later.jid})
        assert {kept.jid, later.jid} <= leased()

        await request_syncs(engine, [kept, later], service, node_name)
        await eventually(synced_everywhere(engine, [kept, later], service, node_name, {"old"}))

        accounts_file.write_text('[[account]]\njid = "not a jid"\npassword = "x"\n')
        assert await pool.reload() is None  # a bad file is logged; nothing changes
        assert set(by_jid(pool)) == {kept.jid, later.jid}
