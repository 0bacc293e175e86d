"""``pubsub-cache project``, ``status`` and ``parked ...``: running and watching the projector."""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import anyio
import click

from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.parking import list_parked
from pubsub_cache.projector.retry import drop_parked, retry_parked
from pubsub_cache.projector.runner import NotLeader, Partition, Projector
from pubsub_cache.projector.status import as_builtins, read_status

from .cli_confirm import confirm, plural
from .cli_options import POSITIVE, SECONDS, account_option, emit, force_option, json_option
from .context import AppContext
from .progress import Reporter
from .status_text import status_lines

log = logging.getLogger(__name__)


def _partition(value: str | None) -> Partition:
    if not value:
        return Partition()
    try:
        index, count = (int(part) for part in value.split("/", 1))
    except ValueError:
        raise click.BadParameter(f"expected INDEX/COUNT like 0/4, got {value!r}") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"partition index {index} is not in 0..{count - 1}")
    return Partition(index, count)


@click.command()
@click.option("--name", default="main", show_default=True, help="Checkpoint name.")
@click.option("--partition", help="INDEX/COUNT: apply only this share of the nodes.")
@click.option("--batch-size", default=500, show_default=True, type=POSITIVE)
@click.option("--lease-seconds", default=15.0, show_default=True, type=SECONDS)
@click.option("--until-caught-up", is_flag=True, help="Exit once the log is exhausted.")
@json_option
@click.pass_obj
def project(
    app: AppContext,
    name: str,
    partition: str | None,
    batch_size: int,
    lease_seconds: float,
    until_caught_up: bool,
    as_json: bool,
) -> None:
    """Run the projector alone (the ingest may run elsewhere on the same database)."""
    from .logs import configure_logging

    if as_json and not until_caught_up:
        raise click.UsageError("--json goes with --until-caught-up (the daemon logs JSON lines)")
    configure_logging(app.settings.log_level, app.settings.log_format)
    projector = Projector(
        app.engine(),
        registry=default_registry(),
        name=name,
        partition=_partition(partition),
        batch_size=batch_size,
        lease_seconds=lease_seconds,
    )
    if until_caught_up:
        _catch_up(projector, app.event_log().head(), as_json=as_json)
        return
    anyio.run(
        _run_until_signalled, projector, app.settings.metrics_port, app.settings.metrics_address
    )


def _catch_up(projector: Projector, head: int, *, as_json: bool) -> None:
    applied = parked = 0
    try:
        with Reporter(f"project {projector.name}") as report:
            while True:
                result = projector.run_once()
                if not result.leader:
                    raise NotLeader(projector.name)
                applied += result.applied
                parked += result.parked
                if result.read == 0:
                    break
                head = max(head, result.position)
                report(result.position, head)
    finally:
        projector.release()
    done = report.summary(applied + parked)
    if as_json:
        emit({"checkpoint": projector.name, "applied": applied, "parked": parked, **done.as_dict()})
        return
    click.echo(f"{done.line('applied')}; {parked} parked; checkpoint {projector.name} caught up")


async def _run_until_signalled(
    projector: Projector, metrics_port: int | None, metrics_address: str
) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope)
        if metrics_port is not None:
            from .metrics import serve_metrics

            await group.start(serve_metrics, projector.engine, metrics_port, metrics_address)
        await group.start(_follow, projector)
        log.info("projector %s following the log", projector.name, extra={"owner": projector.owner})


async def _follow(projector: Projector, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    await projector.run(task_status=task_status)


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            log.info("received %s: finishing the current batch", signal.Signals(received).name)
            scope.cancel()
            return


@click.command()
@json_option
@click.pass_obj
def status(app: AppContext, as_json: bool) -> None:
    """Head of the log, each checkpoint's lag, parked events, nodes by sync state.

    Then each account the database knows: its ingest's state and since when, its nodes by
    sync state, its items, and its events not applied yet.
    """
    with app.engine(create=False).connect() as connection:
        report = read_status(connection, now=time.time())
    if as_json:
        emit(as_builtins(report))
        return
    for line in status_lines(report, now=time.time()):
        click.echo(line)


@click.group()
def parked() -> None:
    """Events the projector could not apply.

    Parked events belong to a checkpoint (a partition), not to an account: without --account
    these commands cover every account's; with it, only the events of that account.
    """


def _parked_rows(app: AppContext, account: str | None, name: str | None = None) -> list[Any]:
    with app.engine(create=False).connect() as connection:
        rows = list_parked(connection, name)
    return [row for row in rows if account is None or row.account == account]


@parked.command("list")
@account_option
@json_option
@click.pass_obj
def parked_list(app: AppContext, account: str | None, as_json: bool) -> None:
    """List parked events with their reasons."""
    rows = _parked_rows(app, account)
    if as_json:
        emit([dict(row._mapping) for row in rows])
        return
    if not rows:
        click.echo("no parked events")
    for row in rows:
        click.echo(
            f"{row.projector} position {row.position} {row.account} {row.service} {row.node}: "
            f"{row.error}"
        )


@parked.command("retry")
@click.option("--name", default="main", show_default=True, help="Projector checkpoint name.")
@account_option
@json_option
@click.pass_obj
def parked_retry(app: AppContext, name: str, account: str | None, as_json: bool) -> None:
    """Apply parked events again, node by node, in order."""
    engine = app.engine(create=False)
    if account is None:
        applied, remaining = retry_parked(engine, default_registry(), name)
    else:
        applied = 0
        scopes = {(row.account, row.service, row.node) for row in _parked_rows(app, account, name)}
        for scope in sorted(scopes):
            applied += retry_parked(engine, default_registry(), name, scope=scope)[0]
        remaining = len(_parked_rows(app, account, name))
    if as_json:
        emit({"applied": applied, "still_parked": remaining})
        return
    click.echo(f"applied {applied}; still parked {remaining}")


@parked.command("drop")
@click.option("--name", default="main", show_default=True, help="Projector checkpoint name.")
@click.option("--position", type=POSITIVE, help="Only this event (default: all parked events).")
@force_option
@account_option
@json_option
@click.pass_obj
def parked_drop(
    app: AppContext,
    name: str,
    position: int | None,
    force: bool,
    account: str | None,
    as_json: bool,
) -> None:
    """Give up on parked events (they stay in the log, unapplied)."""
    rows = [
        row
        for row in _parked_rows(app, account, name)
        if position is None or row.position == position
    ]
    whose = "" if account is None else f" of {account}"
    what = f"dropping {plural(len(rows), 'parked event')}{whose} of checkpoint {name}"
    if rows:  # nothing to forget: nothing to ask
        question = f"Drop {plural(len(rows), 'parked event')}{whose} of checkpoint {name}?"
        confirm(question, what=what, force=force, as_json=as_json)
    engine = app.engine(create=False)
    if account is None:
        dropped = drop_parked(engine, name, position=position)
    else:  # only that account's: one by one (parked events are few)
        dropped = sum(drop_parked(engine, name, position=row.position) for row in rows)
    if as_json:
        emit({"dropped": dropped})
        return
    click.echo(f"dropped {dropped}")
