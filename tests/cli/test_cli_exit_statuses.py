"""Exit statuses as a supervisor or a script sees them, through the console script: 0 done;
1 runtime failure; 2 bad usage, configuration or credentials; 3 done, but the answer is no.
Under ``--json`` an error is one JSON object on stdout with the same status."""

from __future__ import annotations

import configparser
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from helpers import published
from pubsub_cache.events.limits import MAX_TEXT
from pubsub_cache.events.log import EventLog
from pubsub_cache.ops import cli_errors
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_content
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import XmppAccount
from tests_support import SCRIPT
from xmpp_fixtures import NewAccount

UNIT = Path(cli_errors.__file__).parent / "systemd" / "pubsub-cache.service"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script, as a user or a supervisor runs it."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=60)


def environment(url: str, account: XmppAccount | None = None, **extra: str) -> dict[str, str]:
    """Our settings only: ``url``, and ``account``'s when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_DATABASE_URL"] = url
    if account is not None:
        env |= {
            "PUBSUB_CACHE_JID": account.jid,
            "PUBSUB_CACHE_PASSWORD": account.password,
            "PUBSUB_CACHE_XMPP_HOST": account.host or "",
            "PUBSUB_CACHE_XMPP_PORT": str(account.port),
            "PUBSUB_CACHE_XMPP_TLS": account.tls,
        }
    return env | extra


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pubsub-cache: ")
    return lines[0]


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one JSON error object a failed ``--json`` command printed on stdout."""
    assert "Traceback" not in result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    assert set(document) == {"error", "kind", "status"}
    assert document["status"] == result.returncode
    return document


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_statuses_are_defined_once_and_the_unit_does_not_restart_on_2_or_3() -> None:
    assert (cli_errors.EXIT_OK, cli_errors.EXIT_FAILURE) == (0, 1)
    assert (cli_errors.EXIT_USAGE, cli_errors.EXIT_NO) == (2, 3)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["RestartPreventExitStatus"].split() == ["2", "3"]


def test_replay_verify_exits_0_when_identical_and_3_when_the_read_model_differs(
    database_url: str, engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("1"), published("2")])
    Projector(engine, registry=default_registry()).catch_up()
    env = environment(database_url)

    same = run_cli("replay", "--verify", "--json", env=env)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["identical"] is True

    with engine.begin() as connection:
        connection.execute(pubsub_content.update().values(payload="<tampered xmlns='urn:x'/>"))
    differs = run_cli("replay", "--verify", env=env)
    assert differs.returncode == 3, differs.stderr
    assert "differs from the live one" in differs.stdout
    as_json = run_cli("replay", "--verify", "--json", env=env)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["identical"] is False


def test_an_unreachable_xmpp_server_is_a_runtime_failure(tmp_path: Path) -> None:
    env = environment(
        sqlite_url(tmp_path / "cache.sqlite3"),
        PUBSUB_CACHE_JID="cache@localhost",
        PUBSUB_CACHE_PASSWORD="secret",
        PUBSUB_CACHE_XMPP_HOST="127.0.0.1",
        PUBSUB_CACHE_XMPP_PORT=str(closed_port()),
        PUBSUB_CACHE_XMPP_TLS="none",
    )

    result = run_cli("sync", "--now", "pubsub.localhost", "blog", env=env)
    as_json = run_cli("sync", "--now", "pubsub.localhost", "blog", "--json", env=env)

    assert result.returncode == 1
    assert "connection failed" in one_line(result)
    assert as_json.returncode == 1
    assert json_error(as_json)["kind"] == "xmpp"


def test_a_node_that_is_not_cached_is_a_runtime_failure_in_json_too(
    database_url: str, engine: Engine
) -> None:
    env = environment(database_url, PUBSUB_CACHE_JID="romeo@montague.lit")

    result = run_cli("get", "pubsub.capulet.lit", "nowhere", "--cache-only", "--json", env=env)

    assert result.returncode == 1
    error = json_error(result)
    assert error["kind"] == "not-cached"
    assert "nowhere" in str(error["error"])
    assert result.stderr == ""


def test_bad_usage_under_json_is_one_object_with_status_2(tmp_path: Path) -> None:
    env = environment(sqlite_url(tmp_path / "absent.sqlite3"), PUBSUB_CACHE_JID="a@b.c")

    bad_option = run_cli("search", "--json", "--offset", "-1", env=env)
    missing_database = run_cli("nodes", "--json", env=env)
    bad_setting = run_cli("status", "--json", env=env | {"PUBSUB_CACHE_JID": "a@b@c"})

    assert (bad_option.returncode, json_error(bad_option)["kind"]) == (2, "usage")
    assert "--offset" in str(json_error(bad_option)["error"])
    assert (missing_database.returncode, json_error(missing_database)["kind"]) == (2, "database")
    assert (bad_setting.returncode, json_error(bad_setting)["kind"]) == (2, "config")
    assert not (tmp_path / "absent.sqlite3").exists()


# -- against the test Prosody: credentials (2) and syncs that end without the whole node (3) --


@pytest.mark.xmpp
@pytest.mark.parametrize("command", [["ingest"], ["sync", "--now", "pubsub.localhost", "blog"]])
def test_a_wrong_password_is_a_credentials_problem_status_2(
    command: list[str], new_account: NewAccount, tmp_path: Path
) -> None:
    account = new_account("cache")
    env = environment(sqlite_url(tmp_path / "cache.sqlite3"), account)
    env["PUBSUB_CACHE_PASSWORD"] = "wrong"

    result = run_cli(*command, env=env)
    as_json = run_cli(*command, "--json", env=env) if command[0] == "sync" else None

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("authentication failed (not-authorized)")
    assert "Traceback" not in result.stderr
    if as_json is not None:
        assert (as_json.returncode, json_error(as_json)["kind"]) == (2, "credentials")


@pytest.mark.xmpp
def test_a_server_without_starttls_is_a_credentials_problem_status_2(
    prosody: LocalProsody, new_account: NewAccount, tmp_path: Path
) -> None:
    account = new_account("cache")  # the test server offers no TLS
    env = environment(sqlite_url(tmp_path / "cache.sqlite3"), account)
    env["PUBSUB_CACHE_XMPP_TLS"] = "starttls"

    result = run_cli("sync", "--now", prosody.pubsub_service, "blog", env=env)

    assert result.returncode == 2, result.stderr
    assert "was STARTTLS offered?" in one_line(result)


@pytest.mark.xmpp
@pytest.mark.anyio
async def test_sync_now_exits_3_unless_the_node_ends_completed(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    node_name: str,
    tmp_path: Path,
) -> None:
    account, service = new_account("cache"), prosody.pubsub_service
    env = environment(sqlite_url(tmp_path / "cache.sqlite3"), account)
    await publisher.create_node(service, node_name)
    await publisher.publish(service, node_name, "fine", "<p xmlns='urn:test'/>")
    completed = run_cli("sync", "--now", service, node_name, "--json", env=env)
    # An id over the event limits is left out of the sync: the node is PARTIAL.
    await publisher.publish(service, node_name, "x" * (MAX_TEXT + 1), "<p xmlns='urn:test'/>")

    partial = run_cli("sync", "--now", service, node_name, env=env)
    partial_json = run_cli("sync", "--now", service, node_name, "--json", env=env)
    gone = run_cli("sync", "--now", service, f"{node_name}-never-created", env=env)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["state"] == "COMPLETED"
    assert partial.returncode == 3, partial.stderr
    assert f"node {node_name!r} of {service}: PARTIAL, 1 items" in partial.stdout
    assert partial_json.returncode == 3
    assert json.loads(partial_json.stdout)["state"] == "PARTIAL"
    assert gone.returncode == 3, gone.stderr
    assert "DELETED" in gone.stdout or "ERROR" in gone.stdout
