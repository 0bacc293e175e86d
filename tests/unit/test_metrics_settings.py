"""The settings of metrics and logs (issue 11): where the metrics endpoint listens (IPv4, IPv6
or a name; a typo is one clear line and status 2) and the log format."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pubsub_cache.ops.settings import ConfigError, load_settings
from tests_support import SCRIPT as CLI


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (None, "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("metrics.example.org", "metrics.example.org"),
    ],
)
def test_the_metrics_address_is_an_ip_address_or_a_host_name(given: str | None, kept: str) -> None:
    environ = {} if given is None else {"PUBSUB_CACHE_METRICS_ADDRESS": given}
    assert load_settings(environ).metrics_address == kept


@pytest.mark.parametrize("given", ["not an address", "1.2.3.4.5", "-x", "[::1"])
def test_a_mistyped_metrics_address_names_the_setting(given: str) -> None:
    with pytest.raises(ConfigError, match=r"PUBSUB_CACHE_METRICS_ADDRESS: expected an IP address"):
        load_settings({"PUBSUB_CACHE_METRICS_ADDRESS": given})


def test_the_log_format_is_auto_unless_forced(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('log_format = "text"\nmetrics_address = "::"\n')

    assert load_settings({}).log_format == "auto"
    assert load_settings({"PUBSUB_CACHE_LOG_FORMAT": "JSON"}).log_format == "json"
    from_file = load_settings({}, config_file=config)
    assert (from_file.log_format, from_file.metrics_address) == ("text", "::")
    with pytest.raises(ConfigError, match="expected one of auto, json, text"):
        load_settings({"PUBSUB_CACHE_LOG_FORMAT": "xml"})


def test_the_daemon_refuses_a_bad_address_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    env |= {
        "PUBSUB_CACHE_DATABASE_URL": f"sqlite:///{tmp_path / 'cache.sqlite3'}",
        "PUBSUB_CACHE_METRICS_ADDRESS": "metrics host",
        "PUBSUB_CACHE_METRICS_PORT": "9999",
    }
    result = subprocess.run(
        [CLI, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "PUBSUB_CACHE_METRICS_ADDRESS" in line
    assert "'metrics host'" in line
