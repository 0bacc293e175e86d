"""``pubsub-cache sync``: ask the daemon to synchronise a node, or do it here (``--now``).

The request goes in the log as a :class:`~pubsub_cache.events.types.SyncRequested` of the
account chosen by ``--account`` (else the only configured one: :func:`.cli_options.account_of`);
the daemon serving that account carries it out. ``--now`` connects as the account (its password
from the settings or the accounts file) and syncs in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import click

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import Event, SyncRequested

from .cli_daemon import first_error, xmpp_account_of
from .cli_errors import EXIT_NO
from .cli_options import account_of, account_option, emit, json_option
from .cli_target import NODE, SERVICE, WORDS, resolve
from .context import AppContext
from .progress import Reporter
from .settings import PREFIX, ConfigError

if TYPE_CHECKING:  # imported where used: ``pubsub-cache sync`` need not load slixmpp
    from pubsub_cache.xmpp.ingest import XmppAccount
    from pubsub_cache.xmpp.sync import SyncResult
    from pubsub_cache.xmpp.writer import EventWriter


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
    configured = app.settings.account(jid)
    if configured is None:
        if jid == app.settings.jid:
            app.settings.require_account()  # names what to set (the password)
        raise ConfigError(
            f"{PREFIX}PASSWORD", f"sync --now as {jid} needs its password: configure the account"
        )
    account = xmpp_account_of(configured)
    event_log = app.event_log()
    with Reporter(f"sync {node}", unit="items") as report:
        try:
            result = anyio.run(_sync_now, event_log, account, service, node, report)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
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
