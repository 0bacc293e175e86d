"""``pubsub-cache run``, ``ingest`` and ``sync`` as a user runs them: the console script, with
settings in the environment, against the test Prosody."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncCompleted, SyncRequested
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import XmppAccount
from tests_support import SCRIPT
from xmpp_fixtures import NewAccount, cached_node

pytestmark = pytest.mark.xmpp


def environment(database_url: str, account: XmppAccount | None = None) -> dict[str, str]:
    """The settings of ``account`` on ``database_url``, and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_DATABASE_URL"] = database_url
    if account is not None:
        env |= {
            "PUBSUB_CACHE_JID": account.jid,
            "PUBSUB_CACHE_PASSWORD": account.password,
            "PUBSUB_CACHE_XMPP_HOST": account.host or "",
            "PUBSUB_CACHE_XMPP_PORT": str(account.port),
            "PUBSUB_CACHE_XMPP_TLS": account.tls,
        }
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_without_an_account_the_daemon_says_in_one_line_what_to_set(
    command: str, tmp_path: Path
) -> None:
    result = run_cli(command, env=environment(sqlite_url(tmp_path / "cache.sqlite3")))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "PUBSUB_CACHE_JID" in result.stderr
    assert "PUBSUB_CACHE_PASSWORD" in result.stderr


def test_a_wrong_password_stops_the_daemon_with_one_line(
    new_account: NewAccount, tmp_path: Path
) -> None:
    account = new_account("cache")
    env = environment(sqlite_url(tmp_path / "cache.sqlite3"), account)
    env["PUBSUB_CACHE_PASSWORD"] = "wrong"

    result = run_cli("ingest", env=env)

    assert result.returncode == 2  # credentials: a supervisor must not retry
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"pubsub-cache: cannot open an XMPP session as {account.jid}/")
    assert last.endswith(
        f"on {account.host}:{account.port}: authentication failed (not-authorized)"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_run_serves_a_sync_request_and_stops_cleanly_on_a_signal(
    stop: signal.Signals,
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    node_name: str,
    tmp_path: Path,
) -> None:
    account, service = new_account("cache"), prosody.pubsub_service
    url = sqlite_url(tmp_path / "cache.sqlite3")
    env = environment(url, account)
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "one", "<p xmlns='urn:test'/>")
    requested = run_cli("sync", service, node_name, env=env)
    assert requested.returncode == 0, requested.stderr
    assert f"sync of node {node_name!r} of {service} requested" in requested.stdout

    daemon = subprocess.Popen(
        [SCRIPT, "run"], env=env, stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL
    )
    engine = create_engine(url)
    try:
        wait_until(lambda: node_state(engine, account.jid, service, node_name) == "COMPLETED")
        daemon.send_signal(stop)
        _, stderr = daemon.communicate(timeout=10)
    finally:
        daemon.kill()
        engine.dispose()

    assert daemon.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert lines[-1]["message"] == "stopped"
    assert any(line["message"].startswith(f"received {stop.name}") for line in lines)


def wait_until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def node_state(engine: Engine, account: str, service: str, node: str) -> str | None:
    try:
        row = cached_node(engine, account, service, node)
    except Exception:  # the daemon has not created the tables yet
        return None
    return row["sync_state"] if row else None


@pytest.mark.anyio
async def test_sync_now_connects_and_logs_a_whole_sync(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    node_name: str,
    tmp_path: Path,
) -> None:
    account, service = new_account("cache"), prosody.pubsub_service
    url = sqlite_url(tmp_path / "cache.sqlite3")
    await publisher.create_node(service, node_name)
    for item in ("a", "b"):
        await publisher.publish(service, node_name, item, "<p xmlns='urn:test'/>")

    result = run_cli("sync", "--now", service, node_name, env=environment(url, account))

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"node {node_name!r} of {service}: COMPLETED, 2 items\n"
    engine = create_engine(url)
    events = [record.event for record in EventLog(engine).read()]
    engine.dispose()
    assert not any(isinstance(e, SyncRequested) for e in events)
    [completed] = [e for e in events if isinstance(e, SyncCompleted)]
    assert (completed.complete, completed.item_count) == (True, 2)
