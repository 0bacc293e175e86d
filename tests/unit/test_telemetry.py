"""The telemetry's default (issue 11): code run without a daemon (the query library in a client
program, one-shot commands) counts nothing, and never loads prometheus_client, whose import a
cached ``pubsub-cache get`` would pay at every start."""

from __future__ import annotations

import subprocess
import sys

from pubsub_cache import telemetry

PROBE = """
import sys
import pubsub_cache.events.log, pubsub_cache.projector.runner, pubsub_cache.query
import pubsub_cache.ops.cli, pubsub_cache.ops.cli_query, pubsub_cache.xmpp.ingest
print("prometheus_client" in sys.modules)
"""


def test_without_a_daemon_nothing_loads_prometheus_client() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )

    assert result.stdout.strip() == "False", result.stderr


def test_the_default_telemetry_keeps_nothing_and_install_swaps_it() -> None:
    default = telemetry.current()
    assert not default.enabled
    default.appended({"items-published": 1})  # accepted, and forgotten

    class Seen(telemetry.Telemetry):
        enabled = True

    seen = Seen()
    assert telemetry.install(seen) is default
    try:
        assert telemetry.current() is seen
    finally:
        assert telemetry.install(None) is seen
    assert telemetry.current() is default
