"""The daemon side of ``bench accounts``: an :class:`~pubsub_cache.xmpp.accounts.IngestPool`
with its projector, alone in a child process, so that its RSS and CPU time are its own.

The parent starts :func:`serve` in a spawned process and talks to it over a pipe. The child
reports once (``connected``) after every account has a session: the seconds it took and its
RSS before and after. The baseline is taken with the daemon already running on no account and
every module an account needs imported, so the difference is what the accounts themselves
cost. Then it answers ``usage`` (CPU seconds so far, reconciliations due or running) until told
``stop``.
"""

from __future__ import annotations

import functools
import gc
import importlib
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import anyio
import anyio.to_thread


@dataclass(frozen=True)
class Connected:
    """The child's first report."""

    seconds: float
    rss_before: int
    rss_after: int
    connected: int
    failed: dict[str, str]


@dataclass(frozen=True)
class Usage:
    """CPU seconds of the child so far, and reconciliations due or running (all accounts)."""

    cpu: float
    pending: int


def rss_bytes() -> int:
    """This process's resident set size (VmRSS of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def serve(
    pipe: Connection,
    url: str,
    accounts: list[tuple[str, str]],
    host: str,
    port: int,
    connect_timeout: float,
) -> None:
    """The child's entry point: serve ``accounts`` (JID, password) on the database at ``url``."""
    anyio.run(_serve, pipe, url, accounts, host, port, connect_timeout, backend="asyncio")


async def _serve(
    pipe: Connection,
    url: str,
    pairs: list[tuple[str, str]],
    host: str,
    port: int,
    connect_timeout: float,
) -> None:
    from pubsub_cache.events.db import create_engine
    from pubsub_cache.ops.cli_daemon import serve_accounts
    from pubsub_cache.xmpp.client import DEFAULT_PLUGINS
    from pubsub_cache.xmpp.ingest import IngestOptions, XmppAccount

    for name in DEFAULT_PLUGINS:  # imported by the first client otherwise: not per account
        importlib.import_module(f"slixmpp.plugins.{name}")
    accounts = [
        XmppAccount(jid=jid, password=password, host=host, port=port, tls="none")
        for jid, password in pairs
    ]
    engine = create_engine(url)
    options = IngestOptions()  # the daemon's defaults: what a deployment pays per account
    try:
        async with anyio.create_task_group() as group:
            daemon = functools.partial(serve_accounts, engine, [], signals=False, options=options)
            pool = await group.start(daemon)
            gc.collect()
            before = rss_bytes()
            started = time.perf_counter()
            pool.update(accounts)
            with anyio.move_on_after(connect_timeout):
                await pool.wait_until(
                    lambda states: all(s.state in ("connected", "failed") for s in states)
                )
            seconds = time.perf_counter() - started
            gc.collect()
            states = pool.states()
            failed = {s.jid: s.reason or s.state for s in states if s.state != "connected"}
            pipe.send(Connected(seconds, before, rss_bytes(), len(states) - len(failed), failed))
            while (request := await anyio.to_thread.run_sync(pipe.recv)) != "stop":
                assert request == "usage", request
                pending = sum(ingest.reconciler.pending for ingest in pool.ingests.values())
                pipe.send(Usage(time.process_time(), pending))
            group.cancel_scope.cancel()
    finally:
        engine.dispose()
        pipe.close()
