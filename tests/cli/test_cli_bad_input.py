"""Bad input gives one line naming what is wrong and exit status 2, never a traceback; and a
command never creates a database where it was not asked to."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import published
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.transfer import export_log
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import sqlite_url
from tests_support import SCRIPT

#: (arguments, extra settings, what the one line must name); ``{tmp}`` is the test's folder.
Case = tuple[list[str], dict[str, str], str]

CASES: dict[str, Case] = {
    "jid with two @": (["nodes"], {"PUBSUB_CACHE_JID": "a@b@c"}, "PUBSUB_CACHE_JID"),
    "jid with a resource": (["nodes"], {"PUBSUB_CACHE_JID": "a@b.c/r"}, "PUBSUB_CACHE_JID"),
    "--account not a jid": (["search", "--account", "not a jid"], {}, "'--account'"),
    "config not UTF-8": (["--config", "{tmp}/latin1.toml", "status"], {}, "not UTF-8"),
    "port not a number": (
        ["status"],
        {"PUBSUB_CACHE_DATABASE_URL": "postgresql://h:abc/x"},
        "PUBSUB_CACHE_DATABASE_URL",
    ),
    "import of a missing file": (["log", "import", "{tmp}/missing.ndjson"], {}, "does not exist"),
    "import of a folder": (["log", "import", "{tmp}"], {}, "is a directory"),
    "huge offset": (["search", "--offset", "100000000000000000000"], {}, "'--offset'"),
    "huge field value": (
        ["search", "--field", "title", "eq", "100000000000000000000000000"],
        {},
        "--field",
    ),
    "NaN field value": (["search", "--field", "rating", "eq", "NaN"], {}, "--field"),
    "NaN timeout": (["get", "s.example", "n", "--timeout", "nan"], {}, "'--timeout'"),
    "negative timeout": (["get", "s.example", "n", "--timeout", "-1"], {}, "'--timeout'"),
    "huge age": (["purge", "--older-than", "99999999999999d"], {}, "--older-than"),
    "batch size 0": (["project", "--batch-size", "0", "--until-caught-up"], {}, "--batch-size"),
    "replay batch size 0": (["replay", "--batch-size", "0"], {}, "--batch-size"),
    "negative lease": (["project", "--lease-seconds", "-1"], {}, "--lease-seconds"),
    "NaN lease": (["project", "--lease-seconds", "nan"], {}, "--lease-seconds"),
    "infinite wait": (["purge", "--all", "--wait", "inf"], {}, "--wait"),
    "negative position": (["parked", "drop", "--position", "-1"], {}, "--position"),
    "explicit SQLite folder missing": (
        ["purge", "--all"],
        {"PUBSUB_CACHE_DATABASE_URL": "sqlite:///{tmp}/typo/cache.sqlite3"},
        "the folder {tmp}/typo does not exist",
    ),
    "read-only command, no database": (
        ["nodes"],
        {"PUBSUB_CACHE_DATABASE_URL": "sqlite:///{tmp}/absent.sqlite3"},
        "no such file",
    ),
    "export from no database": (
        ["log", "export", "{tmp}/out.ndjson"],
        {"PUBSUB_CACHE_DATABASE_URL": "sqlite:///{tmp}/absent.sqlite3"},
        "no such file",
    ),
}


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=60)


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    return env | settings


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_gives_one_line_and_status_2(case: str, tmp_path: Path) -> None:
    args, settings, needle = CASES[case]
    (tmp_path / "latin1.toml").write_bytes("jid = 'caf\xe9@example.org'\n".encode("latin-1"))
    database = tmp_path / "cache.sqlite3"
    engine = create_engine(sqlite_url(database))
    ensure_schema(engine)
    engine.dispose()
    given = {
        "PUBSUB_CACHE_DATABASE_URL": sqlite_url(database),
        "PUBSUB_CACHE_JID": "romeo@montague.lit",
        **settings,
    }

    def filled(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path))

    result = run_cli(
        [filled(arg) for arg in args], environment(**{k: filled(v) for k, v in given.items()})
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pubsub-cache: ")
    assert filled(needle) in lines[0]
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "absent.sqlite3").exists()


def _mount_tmpfs_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs none /mnt"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not _mount_tmpfs_works(), reason="cannot mount a tmpfs (unshare)")
def test_log_import_onto_a_full_disk_gives_one_line_and_status_2(tmp_path: Path) -> None:
    # A real ENOSPC: the database lives on a 1 MB tmpfs, mounted in a private mount namespace
    # (gone with the process), and the export holds about 4 MB of payloads.
    source = create_engine(sqlite_url(tmp_path / "source.sqlite3"))
    ensure_schema(source)
    log = EventLog(source)
    payload = "<p xmlns='urn:test'>" + "x" * 4000 + "</p>"
    log.append([published(f"i{n}", payload=payload) for n in range(1000)])
    dump = tmp_path / "log.ndjson"
    with dump.open("wb") as out:
        export_log(log, out, fmt="ndjson")
    log.close()
    source.dispose()
    disk = tmp_path / "disk"
    disk.mkdir()
    command = f"mount -t tmpfs -o size=1m none {disk} && exec {SCRIPT} log import {dump}"
    env = environment(PUBSUB_CACHE_DATABASE_URL=sqlite_url(disk / "cache.sqlite3"))

    result = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pubsub-cache: the database is out of space")


@pytest.mark.parametrize(
    ("args", "status", "created"),
    [
        (["db", "upgrade"], 0, True),
        (["purge", "--all", "--force"], 0, True),
        (["db", "current"], 0, False),
        (["status"], 2, False),
        (["search"], 2, False),
        (["parked", "list"], 2, False),
    ],
)
def test_only_writing_commands_create_the_default_database(
    args: list[str], status: int, created: bool, tmp_path: Path
) -> None:
    env = environment(XDG_DATA_HOME=str(tmp_path), PUBSUB_CACHE_JID="romeo@montague.lit")

    result = run_cli(args, env)

    assert result.returncode == status, result.stderr
    assert (tmp_path / "pubsub-cache" / "cache.sqlite3").exists() == created
