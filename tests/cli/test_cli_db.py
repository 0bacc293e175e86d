"""The installed ``pubsub-cache`` command: db commands, and one-line errors with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pubsub_cache.migrations.api import head_revision


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script the way a user would."""
    command = [str(Path(sys.executable).parent / "pubsub-cache"), *args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    environment.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def test_db_upgrade_current_downgrade(database_url: str) -> None:
    env = {"PUBSUB_CACHE_DATABASE_URL": database_url}
    assert "revision: none" in run_cli("db", "current", env=env).stdout
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"-> {head_revision()}" in upgraded.stdout
    assert f"revision: {head_revision()}" in run_cli("db", "current", env=env).stdout
    downgraded = run_cli("db", "downgrade", "base", env=env)
    assert downgraded.returncode == 0, downgraded.stderr
    assert "-> base" in downgraded.stdout


def test_the_default_database_is_created_in_the_xdg_data_directory(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", env={"XDG_DATA_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pubsub-cache" / "cache.sqlite3").exists()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PUBSUB_CACHE_XMPP_PORT": "eighty"}, "PUBSUB_CACHE_XMPP_PORT"),
        ({"PUBSUB_CACHE_DATABASE_URL": "oracle://x/y"}, "PUBSUB_CACHE_DATABASE_URL"),
        (
            {"PUBSUB_CACHE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
            "cannot open the database postgresql://nobody@127.0.0.1:1/none",
        ),
        (
            {"PUBSUB_CACHE_DATABASE_URL": "sqlite:////proc/no/such/dir/cache.sqlite3"},
            "cache.sqlite3",
        ),
    ],
)
def test_bad_settings_and_unreachable_databases_give_one_line_and_status_2(
    env: dict[str, str], needle: str
) -> None:
    result = run_cli("db", "current", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pubsub-cache: ")
    assert needle in lines[0]
