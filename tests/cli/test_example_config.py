"""The shipped example configuration (ops/example.toml): every key it sets or shows is a real
setting, and a daemon started on it unchanged stops at once with one line saying what to fill
in, instead of trying for minutes to log in to a domain that does not exist."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from pubsub_cache.ops import cli_errors
from pubsub_cache.ops.settings import load_settings
from tests_support import SCRIPT

EXAMPLE = Path(cli_errors.__file__).parent / "example.toml"


def test_every_key_the_example_shows_is_a_setting(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # Uncomment the first "# key = value" line of each key not set: the keys the example only
    # shows must be settings too.
    lines: list[str] = []
    seen = set(tomllib.loads(text))
    for line in text.splitlines():
        key = re.match(r"^# (\w+) = ", line)
        if key and key.group(1) not in seen:
            seen.add(key.group(1))
            lines.append(line[2:])
        else:
            lines.append(line)
    shown = "\n".join(lines)
    keys = set(tomllib.loads(shown))
    assert {"jid", "password", "metrics_address", "log_format", "accounts_file"} <= keys
    config = tmp_path / "all.toml"
    config.write_text(
        shown.replace("/var/lib/pubsub-cache", str(tmp_path)).replace(
            'accounts_file = "/etc/pubsub-cache/accounts.toml"', ""
        ),
        encoding="utf-8",
    )
    settings = load_settings(environ={}, config_file=config)
    assert settings.jid == "romeo@montague.lit"
    assert settings.metrics_address == "127.0.0.1"


def test_the_daemon_on_the_unchanged_example_stops_at_once_naming_the_missing_account(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    # Only the state folder moved (it exists on a system where the unit's StateDirectory made it).
    config.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("/var/lib/pubsub-cache", str(tmp_path)),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env["PUBSUB_CACHE_CONFIG"] = str(config)
    result = subprocess.run(
        [SCRIPT, "run"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pubsub-cache: ")
    assert "no XMPP account configured" in line
    assert not list(tmp_path.glob("*.sqlite3")), "nothing is created before the account is known"
