"""``pubsub-cache purge`` and ``reset``: operator commands, recorded as events in the log.

The projector applies them like any other event, so a replay agrees with the live read model.
Both ask for confirmation on a terminal and refuse without one unless ``--force`` (see
:mod:`.cli_confirm`); the question counts what would go in the read model as it is now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa

from pubsub_cache.events import CachePurged, CacheReset
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.query import BlockingQuery

from .cli_confirm import confirm, plural
from .cli_options import (
    SECONDS,
    account_of,
    account_option,
    emit,
    force_option,
    json_option,
    moment_before,
)
from .context import AppContext

_WAIT = click.option(
    "--wait", type=SECONDS, help="Wait up to this many seconds for the projector to apply it."
)


@click.command()
@click.option("-s", "--service", help="Only items of this service.")
@click.option("-n", "--node", help="Only items of this node.")
@click.option(
    "--type",
    "node_types",
    multiple=True,
    help="Only items of nodes of this type (repeatable: any).",
)
@click.option(
    "--subtype", "subtypes", multiple=True, help="Only items of nodes of this subtype (repeatable)."
)
@click.option("--older-than", help="Only items not updated since: 30d, 12h, or a date-time.")
@click.option("--created-before", help="Only items first cached before: 30d, 12h, or a date-time.")
@click.option("--all", "everything", is_flag=True, help="Every cached item of the account.")
@_WAIT
@force_option
@account_option
@json_option
@click.pass_obj
def purge(
    app: AppContext,
    service: str | None,
    node: str | None,
    node_types: Sequence[str],
    subtypes: Sequence[str],
    older_than: str | None,
    created_before: str | None,
    everything: bool,
    wait: float | None,
    force: bool,
    account: str | None,
    as_json: bool,
) -> None:
    """Forget cached items (recorded as a CachePurged event; synced nodes must sync again).

    Filters combine with AND; a repeated --type or --subtype keeps any of its values.
    """
    if not (
        everything or service or node or node_types or subtypes or older_than or created_before
    ):
        raise click.UsageError(
            "say what to purge: --service, --node, --type, --subtype, --older-than, "
            "--created-before or --all"
        )
    older = None if older_than is None else moment_before(older_than, option="--older-than")
    created = (
        None if created_before is None else moment_before(created_before, option="--created-before")
    )
    types = list(dict.fromkeys(node_types))
    event = CachePurged(
        account=account_of(app, account),
        observed_at=datetime.now(UTC),
        service=service,
        node=node,
        # One type goes where every version reads it; several in the newer list field.
        node_type=types[0] if len(types) == 1 else None,
        node_types=types if len(types) > 1 else [],
        subtypes=list(dict.fromkeys(subtypes)),
        older_than=older,
        created_before=created,
    )
    nodes, items = _purge_counts(app, event)
    scope = f"{plural(nodes, 'node')} of {event.account}"
    confirm(
        f"Purge {plural(items, 'item')} of {scope}?",
        what=f"purge of {scope}",
        force=force,
        as_json=as_json,
    )
    _record(app, event, wait, as_json=as_json)


@click.command()
@click.option("-s", "--service", help="Only nodes of this service.")
@click.option("-n", "--node", help="Only this node.")
@click.option("--all", "everything", is_flag=True, help="Every node of the account.")
@_WAIT
@force_option
@account_option
@json_option
@click.pass_obj
def reset(
    app: AppContext,
    service: str | None,
    node: str | None,
    everything: bool,
    wait: float | None,
    force: bool,
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
    nodes, items = _counts(app, _node_scope(event), [])
    scope = f"{plural(nodes, 'node')} of {event.account}"
    confirm(
        f"Reset {scope} ({plural(items, 'item')})?",
        what=f"reset of {scope}",
        force=force,
        as_json=as_json,
    )
    _record(app, event, wait, as_json=as_json)


def _node_scope(event: CachePurged | CacheReset) -> list[Any]:
    # The nodes the projector's _scope will select (projector/apply.py), on the live tables.
    node = pubsub_node.c
    scope: list[Any] = [node.account == event.account]
    if event.service is not None:
        scope.append(node.service == event.service)
    if event.node is not None:
        scope.append(node.node == event.node)
    if isinstance(event, CachePurged):
        if event.node_type is not None:
            scope.append(node.type == event.node_type)
        if event.node_types:
            scope.append(node.type.in_(event.node_types))
        if event.subtypes:
            scope.append(node.subtype.in_(event.subtypes))
    return scope


def _purge_counts(app: AppContext, event: CachePurged) -> tuple[int, int]:
    item = pubsub_item.c
    bounds: list[Any] = []
    if event.older_than is not None:
        bounds.append(item.updated_at < event.older_than.timestamp())
    if event.created_before is not None:
        bounds.append(item.created_at < event.created_before.timestamp())
    return _counts(app, _node_scope(event), bounds)


def _counts(app: AppContext, scope: list[Any], bounds: list[Any]) -> tuple[int, int]:
    """How many nodes the command covers and how many of their items it forgets, now."""
    joined = pubsub_node.join(pubsub_item, pubsub_item.c.node_id == pubsub_node.c.id)
    with app.engine().connect() as connection:
        nodes = connection.execute(sa.select(sa.func.count()).where(*scope)).scalar_one()
        items = connection.execute(
            sa.select(sa.func.count()).select_from(joined).where(*scope, *bounds)
        ).scalar_one()
    return int(nodes), int(items)


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
