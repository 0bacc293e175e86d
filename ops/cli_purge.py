"""``pubsub-cache purge`` and ``reset``: operator commands, recorded as events in the log.

The projector applies them like any other event, so a replay agrees with the live read model.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pubsub_cache.events import CachePurged, CacheReset
from pubsub_cache.query import BlockingQuery

from .cli_options import SECONDS, account_of, account_option, emit, json_option, moment_before
from .context import AppContext

_WAIT = click.option(
    "--wait", type=SECONDS, help="Wait up to this many seconds for the projector to apply it."
)


@click.command()
@click.option("--service", help="Only items of this service.")
@click.option("--node", help="Only items of this node.")
@click.option("--type", "node_type", help="Only items of nodes of this type.")
@click.option("--older-than", help="Only items not updated since: 30d, 12h, or a date-time.")
@click.option("--all", "everything", is_flag=True, help="Every cached item of the account.")
@_WAIT
@account_option
@json_option
@click.pass_obj
def purge(
    app: AppContext,
    service: str | None,
    node: str | None,
    node_type: str | None,
    older_than: str | None,
    everything: bool,
    wait: float | None,
    account: str | None,
    as_json: bool,
) -> None:
    """Forget cached items (recorded as a CachePurged event; synced nodes must sync again)."""
    if not (everything or service or node or node_type or older_than):
        raise click.UsageError(
            "say what to purge: --service, --node, --type, --older-than or --all"
        )
    before = None if older_than is None else moment_before(older_than, option="--older-than")
    event = CachePurged(
        account=account_of(app, account),
        observed_at=datetime.now(UTC),
        service=service,
        node=node,
        node_type=node_type,
        older_than=before,
    )
    _record(app, event, wait, as_json=as_json)


@click.command()
@click.option("--service", help="Only nodes of this service.")
@click.option("--node", help="Only this node.")
@click.option("--all", "everything", is_flag=True, help="Every node of the account.")
@_WAIT
@account_option
@json_option
@click.pass_obj
def reset(
    app: AppContext,
    service: str | None,
    node: str | None,
    everything: bool,
    wait: float | None,
    account: str | None,
    as_json: bool,
) -> None:
    """Forget nodes: their items and sync state (recorded as a CacheReset event)."""
    if not (everything or service or node):
        raise click.UsageError("say what to reset: --service, --node or --all")
    event = CacheReset(
        account=account_of(app, account),
        observed_at=datetime.now(UTC),
        service=service,
        node=node,
    )
    _record(app, event, wait, as_json=as_json)


def _record(
    app: AppContext, event: CachePurged | CacheReset, wait: float | None, *, as_json: bool
) -> None:
    (position,) = app.event_log().append([event])
    kind = type(event).__name__
    if wait is not None:
        with BlockingQuery.open(app.engine()) as query:
            query.wait_for(position, timeout=wait)
    if as_json:
        emit({"recorded": kind, "position": position, "applied": wait is not None})
    elif wait is None:
        click.echo(f"recorded {kind} at log position {position}; the projector applies it")
    else:
        click.echo(f"recorded {kind} at log position {position}; applied")
