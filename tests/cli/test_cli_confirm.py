"""``purge``, ``reset`` and ``parked drop`` ask before forgetting on a terminal (a real pty here,
answered y and n), skip the question with -f/--force, and refuse without a terminal; ``purge``
by several types, by subtype and by ``--created-before``, applied by the projector; ``parked``
filtered by ``--account``."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import msgspec
import pytest
import sqlalchemy as sa
from query_helpers import ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, published
from pubsub_cache.events import CachePurged
from pubsub_cache.events.codec import decode
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parking import park
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.query.watch import as_change
from tests_support import SCRIPT

JULIET = "juliet@capulet.lit"


def environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    return env | {"PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_JID": ACCOUNT}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script without a terminal (stdin from /dev/null, as under cron)."""
    return subprocess.run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def on_a_terminal(args: list[str], answer: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the command with stdin and stderr on a pty; answer its question with ``answer``.
    Returns the status, what was written on the terminal, and stdout."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [SCRIPT, *args], stdin=terminal, stderr=terminal, stdout=subprocess.PIPE, env=env
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"[y/N]" not in seen:  # wait for the question itself
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                seen += os.read(controller, 4096)
        os.write(controller, answer.encode() + b"\n")
        stdout, _ = process.communicate(timeout=60)
        while select.select([controller], [], [], 0)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the other side closed: everything is read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return process.returncode, seen.decode(), stdout.decode()


def commands(log: EventLog) -> list[str]:
    return [type(record.event).__name__ for record in log.read(limit=1000)]


@pytest.fixture
def cached(engine: Engine) -> ReadModelRows:
    rows = ReadModelRows(engine)
    rows.items(rows.node("blog"), ["a", "b", "c"])
    return rows


def test_without_a_terminal_they_refuse_unless_forced(
    database_url: str, cached: ReadModelRows, event_log: EventLog
) -> None:
    env = environment(database_url)
    for command in (["purge", "--all"], ["reset", "--node", "blog"]):
        refused = run(*command, env=env)
        assert refused.returncode == 2, refused
        assert "Traceback" not in refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.endswith("refusing without a terminal; add --force (see --help)"), line
        as_json = run(*command, "--json", env=env)
        assert as_json.returncode == 2
        assert "refusing without a terminal" in json.loads(as_json.stdout)["error"]
    assert commands(event_log) == []
    assert run("purge", "--all", "-f", env=env).returncode == 0
    assert run("reset", "--all", "--force", "--json", env=env).returncode == 0
    assert commands(event_log) == ["CachePurged", "CacheReset"]


def test_on_a_terminal_they_ask_and_a_yes_goes_ahead_a_no_records_nothing(
    database_url: str, cached: ReadModelRows, event_log: EventLog
) -> None:
    env = environment(database_url)
    status, terminal, _ = on_a_terminal(["purge", "--node", "blog"], "n", env)
    assert f"Purge 3 items of 1 node of {ACCOUNT}? [y/N]" in terminal
    assert status == 1
    assert "not done (answered no)" in terminal
    status, terminal, _ = on_a_terminal(["reset", "--all"], "", env)  # Enter: the default, no
    assert f"Reset 1 node of {ACCOUNT} (3 items)? [y/N]" in terminal
    assert status == 1
    assert commands(event_log) == []

    status, terminal, stdout = on_a_terminal(["purge", "--node", "blog", "--json"], "y", env)
    assert status == 0, terminal
    assert json.loads(stdout)["recorded"] == "CachePurged"  # stdout stays one JSON document
    status, terminal, stdout = on_a_terminal(["reset", "--all"], "y", env)
    assert status == 0
    assert "recorded CacheReset" in stdout
    assert commands(event_log) == ["CachePurged", "CacheReset"]


def test_parked_commands_filter_by_account_and_drop_asks(
    database_url: str, engine: Engine, event_log: EventLog
) -> None:
    positions = event_log.append(
        [published("1"), published("2", account=JULIET), published("3", account=JULIET)]
    )
    with engine.begin() as connection:
        for position, account in zip(positions, (ACCOUNT, JULIET, JULIET), strict=True):
            park(connection, "main", position, (account, SERVICE, "blog"), "boom", now=0)
    env = environment(database_url)

    def listed(*argv: str) -> list[int]:
        result = run("parked", "list", "--json", *argv, env=env)
        assert result.returncode == 0, result
        return [row["position"] for row in json.loads(result.stdout)]

    assert listed() == positions  # every account's without --account
    assert listed("--account", JULIET) == positions[1:]
    refused = run("parked", "drop", "--account", JULIET, env=env)
    assert refused.returncode == 2
    assert "refusing without a terminal" in refused.stderr
    status, terminal, _ = on_a_terminal(["parked", "drop", "--account", JULIET], "n", env)
    assert "Drop 2 parked events of juliet@capulet.lit of checkpoint main? [y/N]" in terminal
    assert status == 1
    assert listed() == positions
    status, terminal, stdout = on_a_terminal(["parked", "drop", "--account", JULIET], "y", env)
    assert status == 0
    assert "dropped 2" in stdout
    assert listed() == positions[:1]
    retried = run("parked", "retry", "--account", JULIET, "--json", env=env)
    assert json.loads(retried.stdout) == {"applied": 0, "still_parked": 0}  # none of juliet's
    retried = run("parked", "retry", "--account", ACCOUNT, "--json", env=env)
    assert json.loads(retried.stdout) == {"applied": 1, "still_parked": 0}
    assert listed() == []


def _purge_and_project(engine: Engine, url: str, *options: str) -> set[str]:
    result = run("purge", *options, "--force", env=environment(url))
    assert result.returncode == 0, result
    projector = Projector(engine, registry=default_registry())
    try:
        projector.catch_up()
    finally:
        projector.release()
    with engine.connect() as connection:
        return set(connection.execute(sa.select(pubsub_item.c.item_id)).scalars())


def test_purge_by_several_types_by_subtype_and_by_creation_time(
    database_url: str, engine: Engine
) -> None:
    rows = ReadModelRows(engine)
    rows.items(rows.node("blog", type="blog"), ["blog1"], position=10)
    rows.items(rows.node("photos", type="gallery", subtype="shared"), ["photo1"], position=11)
    rows.items(rows.node("avatar", type="avatar", subtype="own"), ["avatar1"], position=12)
    rows.items(rows.node("old", type="other"), ["early"], position=20)
    rows.items(rows.node("new", type="other"), ["late"], position=40)
    assert _purge_and_project(engine, database_url, "--type", "blog", "--type", "avatar") == {
        "photo1",
        "early",
        "late",
    }
    assert _purge_and_project(engine, database_url, "--subtype", "shared") == {"early", "late"}
    # created_at of item N is T0 + N seconds (query_helpers.ReadModelRows).
    before = at(30).isoformat()
    assert _purge_and_project(engine, database_url, "--created-before", before) == {"late"}
    with engine.connect() as connection:
        query = sa.select(pubsub_node.c.node, pubsub_node.c.sync_state)
        states: dict[str, str] = {row.node: row.sync_state for row in connection.execute(query)}
    assert states["old"] == "PARTIAL"
    assert states["new"] == "PARTIAL"
    assert states["blog"] == "NONE"


def test_a_purge_logged_before_the_new_fields_decodes_and_reads_as_before() -> None:
    old = msgspec.msgpack.encode(
        {
            "type": "cache-purged",
            "account": ACCOUNT,
            "observed_at": at(0),
            "source": "command",
            "node_type": "blog",
        }
    )
    event = decode(old)
    assert event == CachePurged(account=ACCOUNT, observed_at=at(0), node_type="blog")
    assert isinstance(event, CachePurged)
    assert (event.node_types, event.subtypes, event.created_before) == ([], [], None)
    newer = CachePurged(account=ACCOUNT, observed_at=at(0), subtypes=["shared"])
    change = as_change(7, newer)
    assert change is not None
    assert (change.kind, change.service, change.node) == (
        "cache-purged",
        None,
        None,
    )
