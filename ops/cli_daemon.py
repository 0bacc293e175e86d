"""``pubsub-cache run`` and ``ingest``: the daemon and its XMPP half (``sync``: cli_sync.py).

``run`` is the daemon: the ingest (XMPP session → event log) and the projector (event log → read
model) in one anyio task group; ``ingest`` is the first alone (the projector then runs as
``pubsub-cache project``, possibly elsewhere on the same PostgreSQL). Both stop cleanly on
SIGTERM or SIGINT: the projector finishes its batch, the ingest appends what it has queued.

With an accounts file (``accounts_file``), they serve every configured account in one event loop
(:class:`~pubsub_cache.xmpp.accounts.IngestPool`, :func:`serve_accounts`); SIGHUP reads the
file again and adds and removes accounts without disturbing the others; ``--shard I/N`` serves
only shard I's accounts (:mod:`.shard`).
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import click
from sqlalchemy.engine import Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events.log import EventLog

from .context import AppContext
from .settings import AccountSettings, Settings, load_settings
from .shard import Shard, shard_option

if TYPE_CHECKING:  # imported where used: ``pubsub-cache --help`` need not load slixmpp
    from pubsub_cache.xmpp.accounts import IngestPool
    from pubsub_cache.xmpp.ingest import Ingest, IngestOptions, XmppAccount

log = logging.getLogger(__name__)

#: Longest wait of the projector for new events before it looks again (seconds).
PROJECTOR_WAIT = 0.25


def xmpp_account(settings: Settings) -> XmppAccount:
    """The account of the settings, or a :class:`ConfigError` saying what to set."""
    from pubsub_cache.xmpp.ingest import XmppAccount

    jid, password = settings.require_account()
    return XmppAccount(
        jid=jid,
        password=password,
        host=settings.xmpp_host,
        port=settings.xmpp_port,
        tls=settings.xmpp_tls,
    )


def xmpp_accounts(settings: Settings) -> list[XmppAccount]:
    """Every configured account (the accounts file's and ``jid``/``password``'s)."""
    return [xmpp_account_of(account) for account in settings.all_accounts()]


def xmpp_account_of(account: AccountSettings) -> XmppAccount:
    from pubsub_cache.xmpp.ingest import XmppAccount

    return XmppAccount(
        jid=account.jid,
        password=account.secret(),
        host=account.xmpp_host,
        port=account.xmpp_port,
        tls=account.xmpp_tls,
    )


@click.command()
@shard_option
@click.pass_obj
def run(app: AppContext, shard: Shard | None) -> None:
    """The daemon: ingest and projector together, until SIGTERM or SIGINT."""
    _serve(app, projector=True, shard=shard)


@click.command()
@shard_option
@click.pass_obj
def ingest(app: AppContext, shard: Shard | None) -> None:
    """The ingest alone: XMPP notifications and syncs into the log (no projector)."""
    _serve(app, projector=False, shard=shard)


def _serve(app: AppContext, *, projector: bool, shard: Shard | None = None) -> None:
    from .logs import configure_logging

    settings = app.settings
    if settings.accounts_file is None and shard is None:  # one account: a wrong password stops it
        account = xmpp_account(settings)
        configure_logging(settings.log_level, settings.log_format)
        engine = app.engine()
        daemon = functools.partial(
            serve,
            engine,
            account,
            projector=projector,
            metrics_port=settings.metrics_port,
            metrics_address=settings.metrics_address,
        )
    else:  # many: one account's failure is reported, the others go on
        configure_logging(settings.log_level, settings.log_format)
        engine = app.engine()
        config_file = app.config_file

        def accounts(settings: Settings) -> list[XmppAccount]:
            return (
                xmpp_accounts(settings) if shard is None else shard.select(xmpp_accounts(settings))
            )

        daemon = functools.partial(
            serve_accounts,
            engine,
            accounts(settings),
            reload=lambda: accounts(load_settings(config_file=config_file)),
            projector=projector,
            shard=shard,
            metrics_port=settings.metrics_port,
            metrics_address=settings.metrics_address,
        )
    try:
        anyio.run(daemon, backend="asyncio")
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    log.info("stopped")


async def serve(
    engine: Engine,
    account: XmppAccount,
    *,
    projector: bool = True,
    signals: bool = True,
    options: IngestOptions | None = None,
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
    task_status: anyio.abc.TaskStatus[Ingest] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the ingest (and the projector) on ``engine`` until cancelled or signalled;
    ``started(ingest)`` once the first XMPP session is up (and the projector caught up)."""
    from pubsub_cache.projector.analysers import default_registry
    from pubsub_cache.projector.runner import Projector
    from pubsub_cache.xmpp.directory import ReadModelDirectory
    from pubsub_cache.xmpp.ingest import Ingest
    from pubsub_cache.xmpp.lease import IngestLease

    registry = default_registry()
    # One EventLog for both: an append by the ingest wakes the projector at once.
    event_log = EventLog(engine)
    directory = ReadModelDirectory(engine, registry)
    lease = IngestLease(engine, account.jid)  # a second daemon of the account stands by
    daemon = Ingest(account, event_log, directory, options=options, lease=lease)
    follower = Projector(engine, registry=registry, log=event_log) if projector else None
    try:
        async with anyio.create_task_group() as group:
            if signals:
                group.start_soon(_stop_on_signal, group.cancel_scope)
                group.start_soon(_reload_on_hangup, None)  # `systemctl reload` must not kill it
            if metrics_port is not None:
                from .metrics import serve_metrics

                await group.start(serve_metrics, engine, metrics_port, metrics_address)
            if follower is not None:
                run = functools.partial(follower.run, idle_timeout=PROJECTOR_WAIT)
                await group.start(run)
            await group.start(daemon.run)
            log.info("ingest running", extra={"account": account.jid, "projector": projector})
            task_status.started(daemon)
    finally:
        # Closed for good: a log wait still finishing in a worker thread cannot reopen it.
        event_log.close()


async def serve_accounts(
    engine: Engine,
    accounts: Sequence[XmppAccount],
    *,
    reload: Callable[[], Sequence[XmppAccount]] | None = None,
    projector: bool = True,
    signals: bool = True,
    options: IngestOptions | None = None,
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
    shard: Shard | None = None,
    task_status: anyio.abc.TaskStatus[IngestPool] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run one ingest per account (and the projector) on ``engine`` until cancelled or
    signalled; ``started(pool)`` once every account was started (not yet connected: see
    :meth:`IngestPool.wait_until`). SIGHUP calls ``reload`` for the accounts to serve. A
    ``shard`` (already applied to ``accounts`` and ``reload``) names the process in the
    leases and in ``status``."""
    from pubsub_cache.projector.analysers import default_registry
    from pubsub_cache.projector.runner import Projector
    from pubsub_cache.xmpp.accounts import IngestPool
    from pubsub_cache.xmpp.directory import ReadModelDirectory
    from pubsub_cache.xmpp.ingest import IngestOptions

    registry = default_registry()
    event_log = EventLog(engine)
    # Every account looks for sync requests each ``request_poll`` seconds: one query serves all.
    poll = (options or IngestOptions()).request_poll
    directory = ReadModelDirectory(engine, registry, shared_requests=poll / 2)
    from pubsub_cache.xmpp.lease import new_owner

    owner = new_owner(f"shard-{shard.index}-of-{shard.count}" if shard is not None else "")
    pool = IngestPool(engine, event_log, directory, options=options, reload=reload, owner=owner)
    follower = Projector(engine, registry=registry, log=event_log) if projector else None
    try:
        async with anyio.create_task_group() as group:
            if signals:
                group.start_soon(_stop_on_signal, group.cancel_scope)
                if reload is not None:
                    group.start_soon(_reload_on_hangup, pool)
            if metrics_port is not None:
                from .metrics import serve_metrics

                await group.start(serve_metrics, engine, metrics_port, metrics_address)
            if follower is not None:
                await group.start(functools.partial(follower.run, idle_timeout=PROJECTOR_WAIT))
            await group.start(pool.run, accounts)
            log.info(
                "ingest of %d accounts running",
                len(accounts),
                extra={"projector": projector, "shard": str(shard) if shard else None},
            )
            task_status.started(pool)
    finally:
        event_log.close()


async def _reload_on_hangup(pool: IngestPool | None) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            if pool is None:
                log.info("received SIGHUP: no accounts file, nothing to read again")
                continue
            log.info("received SIGHUP: reading the accounts again")
            await pool.reload()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            log.info("received %s: stopping", signal.Signals(received).name)
            scope.cancel()
            return


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # anyio wraps a task's exception in a group; the user wants the one line it says.
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return first_error(error)
        if isinstance(error, PubsubCacheError):
            return error
    return group
