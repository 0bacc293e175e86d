"""The daemon as a process (issue 13): ``pubsub-cache run`` with an accounts file against the
real Prosody, sent a real SIGHUP after the file changed, and killed with SIGKILL: what
``status`` then says, and what the next daemon clears."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.status import AccountStatus, read_status
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import XmppAccount
from pubsub_cache.xmpp.lease import DEFAULT_TTL
from tests_support import SCRIPT
from xmpp_fixtures import cached_items, eventually, password_of

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]


def register(prosody: LocalProsody, count: int) -> list[XmppAccount]:
    users = [f"hup-{uuid.uuid4().hex[:6]}-{number}" for number in range(count)]
    prosody.register_many(users, password_of("hup"))
    return [
        XmppAccount(
            jid=prosody.jid(user),
            password=password_of("hup"),
            host=prosody.host,
            port=prosody.port,
            tls="none",
        )
        for user in users
    ]


def write_accounts(path: Path, accounts: Sequence[XmppAccount]) -> None:
    path.write_text(
        "".join(
            f'[[account]]\njid = "{a.jid}"\npassword = "{a.password}"\nxmpp_host = "{a.host}"\n'
            f'xmpp_port = {a.port}\nxmpp_tls = "none"\n\n'
            for a in accounts
        )
    )


@contextmanager
def daemon(engine: Engine, accounts_file: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pubsub-cache run`` in a process of its own; SIGTERM (then waited for) on leaving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env |= {
        "PUBSUB_CACHE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PUBSUB_CACHE_ACCOUNTS_FILE": str(accounts_file),
        "PUBSUB_CACHE_LOG_LEVEL": "info",
    }
    with log.open("ab") as output:
        process = subprocess.Popen([SCRIPT, "run"], env=env, stdout=output, stderr=output)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def recorded(engine: Engine, *, now: float | None = None) -> dict[str, AccountStatus]:
    """Each account's state as ``pubsub-cache status`` reads it (at ``now``)."""
    with engine.connect() as connection:
        return {a.account: a for a in read_status(connection, now=now).accounts}


def states(engine: Engine) -> dict[str, str]:
    return {jid: account.state for jid, account in recorded(engine).items()}


async def request_syncs(engine: Engine, jids: Sequence[str], service: str, node: str) -> None:
    now = datetime.now(UTC)
    requests = [SyncRequested(account=j, service=service, node=node, observed_at=now) for j in jids]
    await anyio.to_thread.run_sync(EventLog(engine).append, requests)


async def test_a_real_sighup_adds_and_removes_accounts_and_the_others_keep_their_sessions(
    prosody: LocalProsody,
    publisher: PubsubClient,
    engine: Engine,
    node_name: str,
    tmp_path: Path,
) -> None:
    service = prosody.pubsub_service
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "old", "<p xmlns='urn:test'>0</p>")
    first, kept_account, later = register(prosody, 3)
    gone, kept, added = first.jid, kept_account.jid, later.jid
    accounts_file = tmp_path / "accounts.toml"
    write_accounts(accounts_file, [first, kept_account])

    with daemon(engine, accounts_file, tmp_path / "daemon.log") as process:
        await eventually(
            lambda: states(engine) == {gone: "connected", kept: "connected"}, timeout=30
        )
        kept_since = recorded(engine)[kept].since
        kept_owner = recorded(engine)[kept].owner

        write_accounts(accounts_file, [kept_account, later])
        os.kill(process.pid, signal.SIGHUP)
        await eventually(
            lambda: states(engine) == {kept: "connected", added: "connected"}, timeout=30
        )
        assert recorded(engine)[kept].since == kept_since  # no reconnection: same session
        assert recorded(engine)[added].owner == kept_owner  # the same process serves it

        # The added account serves: its view gets the node and a publish made after the reload.
        await request_syncs(engine, [kept, added], service, node_name)
        await eventually(lambda: set(cached_items(engine, added, service, node_name)) == {"old"})
        await publisher.publish(service, node_name, "new", "<p xmlns='urn:test'>1</p>")
        await eventually(
            lambda: all(
                set(cached_items(engine, jid, service, node_name)) == {"old", "new"}
                for jid in (kept, added)
            ),
            timeout=20,
        )
        assert cached_items(engine, gone, service, node_name) == {}  # never synced, never fed
        assert process.poll() is None
    assert process.returncode == 0, (tmp_path / "daemon.log").read_text()[-2000:]


async def test_a_killed_daemon_s_accounts_show_stale_and_the_next_daemon_clears_them(
    prosody: LocalProsody, engine: Engine, tmp_path: Path
) -> None:
    kept, dropped = register(prosody, 2)
    accounts_file = tmp_path / "accounts.toml"
    write_accounts(accounts_file, [kept, dropped])
    log = tmp_path / "daemon.log"

    with daemon(engine, accounts_file, log) as killed:
        both = {kept.jid: "connected", dropped.jid: "connected"}
        await eventually(lambda: states(engine) == both, timeout=30)
        dead_owner = recorded(engine)[kept.jid].owner
        assert dead_owner is not None
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

    # Its leases still run (for up to DEFAULT_TTL): as far as anyone can tell, it serves.
    assert states(engine) == both
    # Once they expired, status says the truth: nobody is known to serve these accounts.
    later = recorded(engine, now=time.time() + DEFAULT_TTL + 1)
    assert {jid: a.state for jid, a in later.items()} == {
        kept.jid: "stale",
        dropped.jid: "stale",
    }
    assert dead_owner in (later[kept.jid].reason or "")
    assert "connected" in (later[kept.jid].reason or "")

    # The next daemon (with one account left in its file) takes over at once (its predecessor
    # died on this machine) and clears what the dead one left.
    write_accounts(accounts_file, [kept])
    with daemon(engine, accounts_file, log):

        def taken_over() -> bool:
            now = recorded(engine)
            served = now.get(kept.jid)
            return set(now) == {kept.jid} and served is not None and served.state == "connected"

        await eventually(taken_over, timeout=30)
        assert recorded(engine)[kept.jid].owner != dead_owner
    assert states(engine) == {kept.jid: "stopped"}


def test_status_judges_a_serving_state_by_its_lease_and_a_new_daemon_sweeps_dead_rows(
    engine: Engine,
) -> None:
    from pubsub_cache.projector.schema import ingest_account, ingest_lease
    from pubsub_cache.xmpp.lease import new_owner, sweep_states

    now = time.time()
    alive, elsewhere = "h:1:alive", "other-host:1:gone"
    dead_here = new_owner().replace(f":{os.getpid()}:", ":999999999:", 1)  # no such process
    rows = {
        "live@x": (alive, "connected", now - 5),
        "expired@x": (alive, "connected", now - 5),
        "taken@x": (elsewhere, "connected", now - 5),
        "starting@x": (alive, "connecting", now - 5),
        "stuck@x": (elsewhere, "connecting", now - 600),
        "failed@x": (elsewhere, "failed", now - 600),
        "killed@x": (dead_here, "failed", now - 600),
    }
    leases = {
        "live@x": (alive, now + 30),
        "expired@x": (alive, now - 1),
        "taken@x": (alive, now + 30),
    }
    with engine.begin() as connection:
        connection.execute(
            ingest_account.insert(),
            [
                {"account": a, "owner": o, "state": s, "reason": None, "since": t}
                for a, (o, s, t) in rows.items()
            ],
        )
        connection.execute(
            ingest_lease.insert(),
            [{"account": a, "owner": o, "expires": e} for a, (o, e) in leases.items()],
        )

    assert {jid: a.state for jid, a in recorded(engine, now=now).items()} == {
        "live@x": "connected",
        "expired@x": "stale",
        "taken@x": "stale",
        "starting@x": "connecting",  # recorded before the lease is taken: not judged yet
        "stuck@x": "stale",
        "failed@x": "failed",  # holds no lease by nature: not judged
        "killed@x": "failed",
    }
    from pubsub_cache.ops.metrics import render

    with engine.connect() as connection:
        metrics = render(read_status(connection, now=now))
    assert 'pubsub_cache_account_state{account="expired@x",state="stale"} 1' in metrics
    assert 'pubsub_cache_account_state{account="expired@x",state="connected"} 0' in metrics
    # A new daemon removes what the dead left: connected without a live lease, and every row
    # of a process of this machine that is gone; it keeps what may be a live daemon's.
    assert sweep_states(engine, "h:2:new", now=now) == 3
    assert set(recorded(engine, now=now)) == {"live@x", "starting@x", "stuck@x", "failed@x"}
