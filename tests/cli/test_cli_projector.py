"""``pubsub-cache project``, ``status`` and ``parked`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, published
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.schema import ingest_account, ingest_lease, projector_checkpoint
from pubsub_cache.projector.status import UNKNOWN
from tests_support import SCRIPT as CLI


def environment(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    return {**env, "PUBSUB_CACHE_DATABASE_URL": url, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def status(url: str) -> dict[str, object]:
    result = subprocess.run(
        [CLI, "status", "--json"], capture_output=True, text=True, env=environment(url), timeout=60
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_project_follows_the_log_serves_metrics_and_stops_cleanly_on_sigterm(
    database_url: str, engine: Engine, event_log: EventLog
) -> None:
    port = free_port()
    env = environment(
        database_url,
        PUBSUB_CACHE_METRICS_PORT=str(port),
        PUBSUB_CACHE_METRICS_ADDRESS="127.0.0.3",  # not the default: the setting is obeyed
    )
    process = subprocess.Popen(
        [CLI, "project", "--lease-seconds", "30"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        event_log.append([published("1"), published("2")])

        def caught_up() -> bool:
            with engine.connect() as connection:
                position = connection.execute(sa.select(projector_checkpoint.c.position)).scalar()
            return position == 2

        wait_until(caught_up)
        with urllib.request.urlopen(f"http://127.0.0.3:{port}/metrics", timeout=10) as answer:
            metrics = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(answer.read().decode())
                for sample in family.samples
            }
        assert metrics["pubsub_cache_log_head", ()] == 2
        assert metrics["pubsub_cache_lag_events", (("name", "main"),)] == 0
        assert metrics["pubsub_cache_nodes", (("state", "NONE"),)] == 1
        # Counted by the daemon itself while it applied them.
        assert metrics["pubsub_cache_events_projected_total", (("projector", "main"),)] == 2
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    assert "received SIGTERM" in errors
    with engine.connect() as connection:
        assert connection.execute(sa.select(projector_checkpoint.c.lease_owner)).scalar() is None


def test_status_shows_lag_until_the_projector_runs(
    database_url: str, engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("1"), published("2"), published("3")])
    before = status(database_url)
    assert before["head"] == 3
    assert before["checkpoints"] == []
    accounts = before["accounts"]
    assert isinstance(accounts, list)
    (account,) = accounts  # recorded by no daemon; every event waits
    assert (account["account"], account["state"], account["since"]) == (ACCOUNT, "unknown", None)
    assert (account["lag_events"], account["items"]) == (3, 0)
    ran = subprocess.run(
        [CLI, "project", "--until-caught-up"],
        capture_output=True,
        text=True,
        env=environment(database_url),
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    after = status(database_url)
    checkpoints = after["checkpoints"]
    assert isinstance(checkpoints, list)
    (point,) = checkpoints
    assert (point["position"], point["lag_events"], point["lag_seconds"]) == (3, 0, 0.0)
    assert after["items"] == 3
    assert after["nodes"] == {
        "NONE": 1,
        "IN_PROGRESS": 0,
        "COMPLETED": 0,
        "PARTIAL": 0,
        "ERROR": 0,
    }
    accounts = after["accounts"]
    assert isinstance(accounts, list)
    (account,) = accounts
    assert (account["lag_events"], account["lag_seconds"], account["items"]) == (0, 0.0, 3)
    assert account["nodes"] == after["nodes"]
    event_log.append([published("4")])
    lagging = status(database_url)
    assert lagging["checkpoints"][0]["lag_events"] == 1  # type: ignore[index]
    assert lagging["checkpoints"][0]["lag_seconds"] >= 0  # type: ignore[index]
    assert lagging["accounts"][0]["lag_events"] == 1  # type: ignore[index]


def test_parked_list_says_when_nothing_is_parked(database_url: str, engine: Engine) -> None:
    result = subprocess.run(
        [CLI, "parked", "list"], capture_output=True, text=True, env=environment(database_url)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no parked events"


def test_status_in_text_shows_each_account_and_why_one_failed(
    database_url: str, engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("1", account="a@example.org"), published("2", node="n")])
    projected = subprocess.run(
        [CLI, "project", "--until-caught-up"], env=environment(database_url), capture_output=True
    )
    assert projected.returncode == 0, projected.stderr
    event_log.append([published("3", account="a@example.org")])
    with engine.begin() as connection:
        connection.execute(
            ingest_account.insert(),
            [
                {"account": "a@example.org", "owner": "h:1:x", "state": "connected",
                 "reason": None, "since": time.time() - 300},
                {"account": "b@example.org", "owner": "h:1:x", "state": "failed",
                 "reason": "authentication failed", "since": time.time()},
            ],
        )  # fmt: skip
        # Connected means holding the account's lease (without it, status says "stale").
        connection.execute(
            ingest_lease.insert(),
            {"account": "a@example.org", "owner": "h:1:x", "expires": time.time() + 60},
        )
    shown = subprocess.run(
        [CLI, "status"], capture_output=True, text=True, env=environment(database_url), timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["account", "state", "for", "items", "lag", "nodes"]
    # One row per account (by JID), its reason and recorder below it.
    assert re.fullmatch(
        r"a@example\.org +connected +5 min +1 +1 event, oldest \d+ s +NONE 1 · ERROR 0", table[1]
    ), table[1]
    assert table[2] == "  recorded by h:1:x"
    assert re.fullmatch(r"b@example\.org +failed +\d+ s +0 +caught up +ERROR 0", table[3])
    assert table[4] == "  authentication failed (recorded by h:1:x)"
    assert re.fullmatch(
        rf"{re.escape(ACCOUNT)} +unknown +- +1 +caught up +NONE 1 · ERROR 0", table[5]
    ), table[5]
    assert table[6] == f"  {UNKNOWN}"
    assert len(table) == 7
