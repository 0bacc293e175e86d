"""``--json`` on every command a script drives, one shape for lists of items, and the summary
(count, elapsed time, rate) long commands end with; progress bar on a terminal, lines otherwise."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from query_helpers import ReadModelRows
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, published
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.progress import Reporter
from pubsub_cache.ops.scratch import sqlite_url
from tests_support import SCRIPT


def run_json(*args: str, url: str, status: int = 0) -> Any:
    """Run ``args --json``; its stdout, parsed (the whole of it must be one document)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env |= {"PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_JID": ACCOUNT}
    result = subprocess.run(
        [SCRIPT, *args, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == status, result.stderr
    return json.loads(result.stdout)


def test_every_command_a_script_drives_prints_one_json_document(
    database_url: str, engine: Engine, event_log: EventLog, tmp_path: Path
) -> None:
    event_log.append([published("1"), published("2")])
    url = database_url

    assert run_json("db", "current", url=url)["revision"] is not None
    assert run_json("sync", SERVICE, NODE, url=url)["position"] == 3
    caught_up = run_json("project", "--until-caught-up", url=url)
    assert (caught_up["applied"], caught_up["parked"], caught_up["count"]) == (3, 0, 3)
    assert {"seconds", "rate"} <= set(caught_up)
    purged = run_json("purge", "--node", NODE, "--force", url=url)
    assert (purged["recorded"], purged["applied"]) == ("CachePurged", False)
    reset = run_json("reset", "--all", "--force", url=url)
    assert (reset["recorded"], reset["position"]) == ("CacheReset", 5)
    replayed = run_json("replay", url=url)
    assert (replayed["swapped"], replayed["replayed"]["count"]) == (True, 5)
    assert run_json("parked", "list", url=url) == []
    assert run_json("parked", "retry", url=url) == {"applied": 0, "still_parked": 0}
    assert run_json("parked", "drop", url=url) == {"dropped": 0}
    compacted = run_json("log", "compact", url=url)
    assert set(compacted) == {"removed", "upto", "kept_undecodable", "removed_contents"}
    dump = tmp_path / "log.ndjson"
    exported = run_json("log", "export", str(dump), url=url)
    assert exported["exported"]["count"] == len(dump.read_bytes().splitlines())
    assert exported["left_out"] == []

    target = create_engine(sqlite_url(tmp_path / "target.sqlite3"))
    imported = run_json("log", "import", str(dump), url=sqlite_url(tmp_path / "target.sqlite3"))
    assert imported["imported"]["count"] == exported["exported"]["count"]
    assert EventLog(target).head() == event_log.head()
    target.dispose()


def test_get_and_search_list_items_under_the_same_key(database_url: str, engine: Engine) -> None:
    rows = ReadModelRows(engine)
    rows.items(rows.node(NODE), ["1", "2"], parsed={"title": "hello"})

    got = run_json("get", SERVICE, NODE, "--cache-only", url=database_url)
    found = run_json("search", url=database_url)

    assert [item["id"] for item in got["items"]] == ["1", "2"]
    assert sorted(item["id"] for item in found["items"]) == ["1", "2"]
    assert set(found["items"][0]) == {"service", "node", *got["items"][0]}
    assert found["hits"] == found["items"]  # the former key, kept for existing scripts
    assert found["total"] == 2


def test_long_commands_end_with_count_time_and_rate(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cache.sqlite3")
    engine = create_engine(url)
    ensure_schema(engine)
    EventLog(engine).append([published(str(n)) for n in range(50)])
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_DATABASE_URL"] = url

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return result

    projected = run("project", "--until-caught-up")
    exported = run("log", "export", str(tmp_path / "log.ndjson"))
    replayed = run("replay")

    assert "applied 50 events in " in projected.stdout
    assert "events/s)" in projected.stdout
    assert "exported 50 events in " in exported.stderr
    assert "replayed 50 events in " in replayed.stderr


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise() -> None:
    plain, terminal = io.StringIO(), Terminal()
    with Reporter("import", every=0, stream=plain) as report:
        report(500, 1000)
        report(1000)
    with Reporter("import", every=0, stream=terminal) as bar:
        bar(500, 1000)

    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("import: 500/1,000 events (")
    assert "ETA" in lines[0]
    assert lines[1].startswith("import: 1,000 events (")
    assert "import: " not in terminal.getvalue()  # rich drew (and cleared) a bar instead
    assert report.summary(1000).line("imported").startswith("imported 1,000 events in ")
