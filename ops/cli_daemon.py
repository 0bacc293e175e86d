"""``pubsub-cache run``, ``ingest`` and ``sync``: the daemon and its XMPP half.

``run`` is the daemon: the ingest (XMPP session → event log) and the projector (event log → read
model) in one anyio task group; ``ingest`` is the first alone (the projector then runs as
``pubsub-cache project``, possibly elsewhere on the same PostgreSQL). Both stop cleanly on
SIGTERM or SIGINT: the projector finishes its batch, the ingest appends what it has queued.

With an accounts file (``accounts_file``), they serve every configured account in one event loop
(:class:`~pubsub_cache.xmpp.accounts.IngestPool`, :func:`serve_accounts`); SIGHUP reads the
file again and adds and removes accounts without disturbing the others.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import click
from sqlalchemy.engine import Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import Event, SyncRequested

from .cli_errors import EXIT_NO
from .cli_options import account_of, account_option, emit, json_option
from .cli_target import NODE, SERVICE, WORDS, resolve
from .context import AppContext
from .progress import Reporter
from .settings import PREFIX, AccountSettings, ConfigError, Settings, load_settings
from .shard import Shard, shard_option

if TYPE_CHECKING:  # imported where used: ``pubsub-cache --help`` need not load slixmpp
    from pubsub_cache.xmpp.accounts import IngestPool
    from pubsub_cache.xmpp.ingest import Ingest, IngestOptions, XmppAccount
    from pubsub_cache.xmpp.sync import SyncResult
    from pubsub_cache.xmpp.writer import EventWriter

log = logging.getLogger(__name__)

#: Longest wait of the projector for new events before it looks again (seconds).
PROJECTOR_WAIT = 0.25


def register(cli: click.Group) -> None:
    """Add this module's commands to ``cli`` (and ``bench ingest`` to its bench group)."""
    from .bench.cli import bench
    from .bench.ingest import ingest as bench_ingest

    cli.add_command(run)
    cli.add_command(ingest)
    cli.add_command(sync)
    bench.add_command(bench_ingest)


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
    return [_xmpp_account(account) for account in settings.all_accounts()]


def _xmpp_account(account: AccountSettings) -> XmppAccount:
    from pubsub_cache.xmpp.ingest import XmppAccount

    return XmppAccount(
        jid=account.jid,
        password=account.password,
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
        raise _first_error(group) from None
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

    registry = default_registry()
    event_log = EventLog(engine)
    directory = ReadModelDirectory(engine, registry)
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


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # anyio wraps a task's exception in a group; the user wants the one line it says.
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if isinstance(error, PubsubCacheError):
            return error
    return group


@click.command()
@WORDS
@SERVICE
@NODE
@click.option("--now", is_flag=True, help="Connect and sync here instead of asking the daemon.")
@account_option
@json_option
@click.pass_obj
def sync(
    app: AppContext,
    words: Sequence[str],
    service_option: str | None,
    node_option: str | None,
    now: bool,
    account: str | None,
    as_json: bool,
) -> None:
    """Synchronise NODE of SERVICE: record the request, which the daemon carries out.

    SERVICE defaults to the account's own PEP service; an xmpp: URI names both. With --now,
    exits with status 3 unless the node ends COMPLETED (ERROR, PARTIAL, or gone).
    """
    jid = account_of(app, account)
    target = resolve(words, service=service_option, node=node_option, own=jid)
    service, node = target.service, target.node
    if now:
        _sync_here(app, jid, service, node, as_json=as_json)
        return
    request = SyncRequested(
        account=jid,
        service=service,
        node=node,
        observed_at=datetime.now(UTC),
        reason="pubsub-cache sync",
    )
    [position] = app.event_log().append([request])
    if as_json:
        emit({"requested": True, "service": service, "node": node, "position": position})
        return
    click.echo(f"sync of node {node!r} of {service} requested (log position {position})")


def _sync_here(app: AppContext, jid: str, service: str, node: str, *, as_json: bool) -> None:
    configured = {each.jid: each for each in app.settings.all_accounts()}
    if jid not in configured:
        if jid == app.settings.jid:
            app.settings.require_account()  # names what to set (the password)
        raise ConfigError(
            f"{PREFIX}PASSWORD", f"sync --now as {jid} needs its password: configure the account"
        )
    account = _xmpp_account(configured[jid])
    event_log = app.event_log()
    with Reporter(f"sync {node}", unit="items") as report:
        try:
            result = anyio.run(_sync_now, event_log, account, service, node, report)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
    done = report.summary(result.item_count)
    if as_json:
        emit(
            {
                "service": service,
                "node": node,
                "state": result.state,
                "item_count": result.item_count,
                "reason": result.reason,
                "sync_id": result.sync_id,
                **done.as_dict(),
            }
        )
    else:
        reason = f" ({result.reason})" if result.reason else ""
        click.echo(f"node {node!r} of {service}: {result.state}, {result.item_count} items{reason}")
        click.echo(done.line("synced"), err=True)
    if result.state != "COMPLETED":
        raise click.exceptions.Exit(EXIT_NO)


async def _sync_now(
    log: EventLog, account: XmppAccount, service: str, node: str, report: Reporter
) -> SyncResult:
    from pubsub_cache.xmpp.client import session
    from pubsub_cache.xmpp.sync import sync_node

    writer = _counting_writer(log, report)
    async with (
        session(
            account.full_jid(),
            account.password,
            host=account.host,
            port=account.port,
            tls=account.tls,
            presence=False,
        ) as client,
        anyio.create_task_group() as group,
    ):
        await group.start(writer.run)
        result = await sync_node(client, writer, service, node)
        await writer.flush()
        group.cancel_scope.cancel()
    return result


def _counting_writer(log: EventLog, report: Reporter) -> EventWriter:
    """A writer that reports the items of each fetched page as it passes them on."""
    from pubsub_cache.events.types import SyncPageFetched
    from pubsub_cache.xmpp.writer import EventWriter, Slot

    class Counting(EventWriter):
        items = 0

        def fill(self, slot: Slot, events: Sequence[Event]) -> None:
            for event in events:
                if isinstance(event, SyncPageFetched):
                    self.items += len(event.items)
                    report(self.items)
            super().fill(slot, events)

    return Counting(log)
