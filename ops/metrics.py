"""Prometheus metrics in the text exposition format, on an optional port of the daemons.

Every scrape reads the same figures as ``pubsub-cache status`` from the database, so the numbers
are right whichever process (ingest, projector) serves them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

import anyio
from anyio.abc import SocketStream, TaskStatus
from sqlalchemy.engine import Engine

from pubsub_cache.events.outage import UNAVAILABLE, Outage
from pubsub_cache.projector.status import AccountStatus, Status, read_status

log = logging.getLogger(__name__)

#: The states an account's ingest can be in, each a series of ``pubsub_cache_account_state``.
ACCOUNT_STATES = ("connecting", "connected", "standing-by", "failed", "stopped")


def render_accounts(states: Sequence[AccountStatus]) -> str:
    """Each account's state (1 for the state it is in, 0 for the others) and since when."""
    lines = [
        "# HELP pubsub_cache_account_state Each account's ingest: 1 for its current state.",
        "# TYPE pubsub_cache_account_state gauge",
    ]
    for account in states:
        for state in ACCOUNT_STATES:
            value = int(account.state == state)
            lines.append(
                f'pubsub_cache_account_state{{account="{account.account}",state="{state}"}} {value}'
            )
    lines += [
        "# HELP pubsub_cache_account_state_since Unix time each account entered its state.",
        "# TYPE pubsub_cache_account_state_since gauge",
    ]
    for account in states:
        lines.append(
            f'pubsub_cache_account_state_since{{account="{account.account}"}} {account.since:.3f}'
        )
    return "\n".join(lines) + "\n"


def render(status: Status) -> str:
    """``status`` as Prometheus text."""
    lines = [
        "# HELP pubsub_cache_log_head Highest position in the event log.",
        "# TYPE pubsub_cache_log_head gauge",
        f"pubsub_cache_log_head {status.head}",
        "# HELP pubsub_cache_checkpoint_position Position each projector has applied up to.",
        "# TYPE pubsub_cache_checkpoint_position gauge",
    ]
    for point in status.checkpoints:
        lines.append(f'pubsub_cache_checkpoint_position{{name="{point.name}"}} {point.position}')
    lines += [
        "# HELP pubsub_cache_lag_events Events not applied yet, per projector.",
        "# TYPE pubsub_cache_lag_events gauge",
    ]
    for point in status.checkpoints:
        lines.append(f'pubsub_cache_lag_events{{name="{point.name}"}} {point.lag_events}')
    lines += [
        "# HELP pubsub_cache_lag_seconds Age of the oldest event not applied yet.",
        "# TYPE pubsub_cache_lag_seconds gauge",
    ]
    for point in status.checkpoints:
        lines.append(f'pubsub_cache_lag_seconds{{name="{point.name}"}} {point.lag_seconds:.3f}')
    lines += [
        "# HELP pubsub_cache_nodes Cached nodes by sync state.",
        "# TYPE pubsub_cache_nodes gauge",
    ]
    for state, count in status.nodes.items():
        lines.append(f'pubsub_cache_nodes{{state="{state}"}} {count}')
    lines += [
        "# TYPE pubsub_cache_items gauge",
        f"pubsub_cache_items {status.items}",
        "# TYPE pubsub_cache_parked_events gauge",
        f"pubsub_cache_parked_events {status.parked}",
        "# HELP pubsub_cache_rejected_notifications_total Notifications refused as spoofed.",
        "# TYPE pubsub_cache_rejected_notifications_total counter",
        f"pubsub_cache_rejected_notifications_total {status.rejected}",
        "# HELP pubsub_cache_parse_errors Cached items whose payload could not be parsed.",
        "# TYPE pubsub_cache_parse_errors gauge",
        f"pubsub_cache_parse_errors {status.parse_errors}",
    ]
    return "\n".join(lines) + "\n" + (render_accounts(status.accounts) if status.accounts else "")


async def serve_metrics(
    engine: Engine,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP request on ``host:port`` with the metrics; runs until cancelled.

    While the database is away, scrapes get ``503 Service Unavailable`` (one warning per
    outage): a request must never take the daemon down with it.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    outage = Outage("metrics", log, delay=lambda _attempt: 0.0)

    async def handle(stream: SocketStream) -> None:
        # The listener's task group runs this: an exception escaping would stop the daemon.
        async with stream:
            with anyio.move_on_after(5), contextlib.suppress(*_GONE):
                await stream.receive(4096)  # the request itself does not matter
                try:
                    body = await anyio.to_thread.run_sync(_scrape, engine)
                except UNAVAILABLE as exc:
                    outage.failed(exc)
                    await stream.send(_response("503 Service Unavailable", _DOWN))
                    return
                outage.ended()
                await stream.send(_response("200 OK", body))

    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _scrape(engine: Engine) -> bytes:
    with engine.connect() as connection:
        return render(read_status(connection, now=time.time())).encode()


#: The body of a scrape while the database is away.
_DOWN = b"# the database is unavailable\n"

#: A client that went away before its answer: nothing to do.
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
