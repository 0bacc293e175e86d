"""``pubsub-cache sync --account`` (issue 13, point 4): the sync request is recorded for the
account asked for, else the only configured one (``PUBSUB_CACHE_JID``, or the accounts file's
only account), and an ambiguous choice is a usage error naming the accounts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from tests_support import SCRIPT


def sync(engine: Engine, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env |= {"PUBSUB_CACHE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    return subprocess.run(
        [SCRIPT, "sync", "pubsub.example.org", "blog", *args],
        env=env | settings,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def requested_for(engine: Engine) -> list[str]:
    return [
        record.event.account
        for record in EventLog(engine).read()
        if isinstance(record.event, SyncRequested)
    ]


def accounts_file(path: Path, *jids: str) -> str:
    path.write_text("".join(f'[[account]]\njid = "{jid}"\npassword = "x"\n\n' for jid in jids))
    return str(path)


def test_sync_records_the_request_for_the_account_chosen_or_the_only_one(
    engine: Engine, tmp_path: Path
) -> None:
    one = accounts_file(tmp_path / "one.toml", "romeo@montague.lit")
    two = accounts_file(tmp_path / "two.toml", "romeo@montague.lit", "juliet@capulet.lit")

    only = sync(engine, PUBSUB_CACHE_ACCOUNTS_FILE=one)
    chosen = sync(engine, "--account", "juliet@capulet.lit", PUBSUB_CACHE_ACCOUNTS_FILE=two)
    single = sync(engine, PUBSUB_CACHE_JID="nurse@capulet.lit")
    ambiguous = sync(engine, PUBSUB_CACHE_ACCOUNTS_FILE=two)

    assert (only.returncode, chosen.returncode, single.returncode) == (0, 0, 0), only.stderr
    assert requested_for(engine) == [
        "romeo@montague.lit",
        "juliet@capulet.lit",
        "nurse@capulet.lit",
    ]
    assert ambiguous.returncode == 2
    assert len(ambiguous.stderr.strip().splitlines()) == 1
    assert "--account" in ambiguous.stderr
    assert "juliet@capulet.lit" in ambiguous.stderr
