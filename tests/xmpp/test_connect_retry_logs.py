"""A daemon that cannot connect says so at WARNING at every attempt, with the reason and when
the next attempt is, and counts the reconnects (issue 11: ``run`` retried DNS for example.org for
ten minutes without a warning a user would notice). Real failures, no network needed: a closed
port on loopback, and a ``.invalid`` name (RFC 6761: never resolves, fails fast)."""

from __future__ import annotations

import logging
import socket

import anyio
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from pubsub_cache import telemetry
from pubsub_cache.events.log import EventLog
from pubsub_cache.ops.telemetry import PrometheusTelemetry
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.xmpp.backoff import Backoff
from pubsub_cache.xmpp.directory import ReadModelDirectory
from pubsub_cache.xmpp.ingest import Ingest, IngestOptions, XmppAccount
from xmpp_fixtures import eventually

pytestmark = pytest.mark.anyio

JID = "romeo@montague.lit"

#: What the warning says of each failure (the system's words, as slixmpp reports them).
REASONS = {"closed port": "[Errno 111]", "unresolvable name": "No DNS record"}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("where", ["closed port", "unresolvable name"])
async def test_each_failed_connect_is_a_warning_with_the_next_attempt(
    engine: Engine, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    host, port = ("127.0.0.1", closed_port()) if where == "closed port" else ("xmpp.invalid", 5222)
    account = XmppAccount(jid=JID, password="x", host=host, port=port, tls="none")
    options = IngestOptions(reconnect=Backoff(initial=0.05, cap=0.1), connect_timeout=5)
    event_log = EventLog(engine)
    directory = ReadModelDirectory(engine, default_registry())
    ingest = Ingest(account, event_log, directory, options=options)
    registry = CollectorRegistry()
    previous = telemetry.install(PrometheusTelemetry(registry))
    caplog.set_level(logging.INFO, logger="pubsub_cache.xmpp.ingest")

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("XMPP session not opened: ")]

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ingest.run)
            await eventually(lambda: len(retries()) >= 3)
            group.cancel_scope.cancel()
    finally:
        telemetry.install(previous)
        event_log.close()

    first, second = retries()[:2]
    assert first.levelno == logging.WARNING
    assert "; next attempt in " in first.getMessage()
    assert first.getMessage().endswith(" s")
    assert (first.account, first.host, first.port) == (JID, host, port)  # type: ignore[attr-defined]
    assert (first.attempt, second.attempt) == (1, 2)  # type: ignore[attr-defined]
    assert 0 < first.next_attempt_in <= 0.1  # type: ignore[attr-defined]
    assert JID not in first.getMessage()
    assert REASONS[where] in first.getMessage()
    reconnects = registry.get_sample_value("pubsub_cache_reconnects_total", {"account": JID})
    assert reconnects is not None
    assert reconnects >= 3
