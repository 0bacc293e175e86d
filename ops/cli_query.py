"""``pubsub-cache get``, ``search``, ``nodes``, ``purge``, ``reset``: the cache from a shell.

Reads go through the query library, as a client program's would: ``get`` answers from the cache
when the node is synced, and otherwise reads live with the configured account (unless
``--cache-only``). ``purge`` and ``reset`` record operator commands in the event log; the
projector applies them, so a replay agrees. Human-readable tables by default; ``--json`` prints
one JSON document. The account defaults to ``PUBSUB_CACHE_JID``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import click

from pubsub_cache.events import CachePurged, CacheReset
from pubsub_cache.query import BlockingQuery, Filter, NotCached, Page, Query, RsmRequest
from pubsub_cache.query.model import ORDERS, NodeState, PageItem

from .context import AppContext


def register(cli: click.Group) -> None:
    """Add this module's commands to ``cli``."""
    for command in (get, search, nodes, purge, reset):
        cli.add_command(command)


_ACCOUNT = click.option(
    "--account", help="Bare JID whose view to read [default: PUBSUB_CACHE_JID]."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _account(app: AppContext, account: str | None) -> str:
    chosen = account or app.settings.jid
    if not chosen:
        raise click.UsageError("no account: give --account JID or set PUBSUB_CACHE_JID")
    return chosen


def _dump(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@click.command()
@click.argument("service")
@click.argument("node")
@click.option("--max", "max_", type=click.IntRange(min=0), help="RSM page size (0: count only).")
@click.option("--item", "item_ids", multiple=True, help="Only this item id (repeatable).")
@click.option("--after", help="RSM: the page after this item id.")
@click.option("--before", help="RSM: the page before this item id; '' for the last page.")
@click.option("--index", type=click.IntRange(min=0), help="RSM: the page starting here.")
@click.option("--max-items", type=click.IntRange(min=0), help="Only the newest N items.")
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="service",
    show_default=True,
    help="service: the order the service itself answers in.",
)
@_ACCOUNT
@click.option("--cache-only", is_flag=True, help="Never read live: an unsynced node is an error.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds for a live read.")
@_JSON
@click.pass_obj
def get(
    app: AppContext,
    service: str,
    node: str,
    max_: int | None,
    item_ids: Sequence[str],
    after: str | None,
    before: str | None,
    index: int | None,
    max_items: int | None,
    order: str,
    account: str | None,
    cache_only: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Items of NODE on SERVICE, oldest first: from the cache, or live when it is not synced.

    XEP-0059 paging: --max alone gives the first (oldest) page, --before '' the last (newest).
    """
    rsm = None
    if any(value is not None for value in (max_, after, before, index)):
        rsm = RsmRequest(max=max_, after=after, before=before, index=index)
    request: dict[str, Any] = {
        "item_ids": list(item_ids) or None,
        "max_items": max_items,
        "rsm": rsm,
        "order_by": order,
    }
    viewer = _account(app, account)
    live = not cache_only and viewer == app.settings.jid and bool(app.settings.password)
    page = anyio.run(_get, app, viewer, service, node, request, live, timeout)
    if as_json:
        _dump(page.as_dict())
        return
    _print_items(service, node, page.items)
    source = "cache" if page.from_cache else "live"
    rsm_set = page.rsm
    click.echo(
        f"{len(page.items)} items from the {source}; rsm first={rsm_set.first} "
        f"last={rsm_set.last} index={rsm_set.index} count={rsm_set.count}; "
        f"{'complete' if page.complete else 'maybe incomplete'}"
        + ("; sync requested" if page.sync_requested else "")
    )


async def _get(
    app: AppContext,
    account: str,
    service: str,
    node: str,
    request: dict[str, Any],
    live: bool,
    timeout: float,
) -> Page:
    # The cache first, without connecting: most reads never need the XMPP session.
    async with Query.open(app.engine(), event_log=app.event_log(), live_timeout=timeout) as query:
        try:
            return await query.get_items(account, service, node, **request)
        except NotCached:
            if not live:
                raise
        from pubsub_cache.xmpp.client import session

        settings = app.settings
        jid, password = settings.require_account()
        async with session(
            jid,
            password,
            host=settings.xmpp_host,
            port=settings.xmpp_port,
            tls=settings.xmpp_tls,
            timeout=timeout,
            request_timeout=timeout,
        ) as client:
            query.client = client
            return await query.get_items(account, service, node, **request)


def _field_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command()
@click.option(
    "--field",
    "fields",
    type=(str, str, str),
    multiple=True,
    metavar="PATH OP VALUE",
    help="A filter on the parsed JSON, e.g. --field author.name eq Juliet (repeatable). "
    'VALUE is read as JSON when it parses (5, true, null, ["a","b"], "5"), else as text.',
)
@click.option("--text", help="Words that must all occur in the item's text.")
@click.option("--type", "node_type", help="Only nodes of this type (blog, avatar...).")
@click.option("--subtype", help="Only nodes of this subtype.")
@click.option("--service", help="Only this service.")
@click.option("--node", help="Only this node.")
@click.option("--since", type=click.DateTime(), help="Published at or after (UTC if no zone).")
@click.option("--until", type=click.DateTime(), help="Published before (UTC if no zone).")
@click.option(
    "--order",
    "orders",
    multiple=True,
    help="service, creation, modification, publication or a parsed path; '-' first for descending "
    "[default: -publication].",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@_ACCOUNT
@_JSON
@click.pass_obj
def search(
    app: AppContext,
    fields: Sequence[tuple[str, str, str]],
    text: str | None,
    node_type: str | None,
    subtype: str | None,
    service: str | None,
    node: str | None,
    since: datetime | None,
    until: datetime | None,
    orders: Sequence[str],
    limit: int,
    offset: int,
    account: str | None,
    as_json: bool,
) -> None:
    """Search the cached items of the account."""
    filters = [Filter(path, op, _field_value(value)) for path, op, value in fields]
    with BlockingQuery.open(app.engine()) as query:
        result = query.search(
            _account(app, account),
            filters=filters,
            text=text,
            service=service,
            node=node,
            type=node_type,
            subtype=subtype,
            published_after=_aware(since),
            published_before=_aware(until),
            order_by=list(orders) or "-publication",
            limit=limit,
            offset=offset,
        )
    if as_json:
        _dump(result.as_dict())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "node", "id", "published", "summary", box=None)
    for hit in result.hits:
        table.add_row(hit.service, hit.node, hit.item.id, _when(hit.item), _summary(hit.item))
    Console(soft_wrap=True).print(table)
    click.echo(f"{len(result.hits)} of {result.total} matching items (offset {offset})")


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--type", "node_type", help="Only nodes of this type.")
@click.option(
    "--state", type=click.Choice(["NONE", "IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR"])
)
@click.option("--deleted", is_flag=True, help="Include deleted nodes.")
@_ACCOUNT
@_JSON
@click.pass_obj
def nodes(
    app: AppContext,
    service: str | None,
    node_type: str | None,
    state: str | None,
    deleted: bool,
    account: str | None,
    as_json: bool,
) -> None:
    """The nodes the cache knows for the account, with their sync state."""
    from pubsub_cache.query.nodes import list_nodes

    found = list_nodes(
        app.engine(),
        _account(app, account),
        service=service,
        type=node_type,
        sync_state=state,
        include_deleted=deleted,
    )
    if as_json:
        _dump([state.as_dict() for state in found])
        return
    _print_nodes(found)


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _older_than(value: str | None) -> datetime | None:
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration (90s, 15m, 12h, 30d, 2w) or an ISO date-time, got {value!r}",
            param_hint="--older-than",
        ) from None
    return _aware(moment)


@click.command()
@click.option("--service", help="Only items of this service.")
@click.option("--node", help="Only items of this node.")
@click.option("--type", "node_type", help="Only items of nodes of this type.")
@click.option("--older-than", help="Only items not updated since: 30d, 12h, or a date-time.")
@click.option("--all", "everything", is_flag=True, help="Every cached item of the account.")
@click.option("--wait", type=float, help="Wait up to this many seconds for the projector.")
@_ACCOUNT
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
) -> None:
    """Forget cached items (recorded as a CachePurged event; synced nodes must sync again)."""
    if not (everything or service or node or node_type or older_than):
        raise click.UsageError(
            "say what to purge: --service, --node, --type, --older-than or --all"
        )
    event = CachePurged(
        account=_account(app, account),
        observed_at=datetime.now(UTC),
        service=service,
        node=node,
        node_type=node_type,
        older_than=_older_than(older_than),
    )
    _record(app, event, wait)


@click.command()
@click.option("--service", help="Only nodes of this service.")
@click.option("--node", help="Only this node.")
@click.option("--all", "everything", is_flag=True, help="Every node of the account.")
@click.option("--wait", type=float, help="Wait up to this many seconds for the projector.")
@_ACCOUNT
@click.pass_obj
def reset(
    app: AppContext,
    service: str | None,
    node: str | None,
    everything: bool,
    wait: float | None,
    account: str | None,
) -> None:
    """Forget nodes: their items and sync state (recorded as a CacheReset event)."""
    if not (everything or service or node):
        raise click.UsageError("say what to reset: --service, --node or --all")
    event = CacheReset(
        account=_account(app, account),
        observed_at=datetime.now(UTC),
        service=service,
        node=node,
    )
    _record(app, event, wait)


def _record(app: AppContext, event: CachePurged | CacheReset, wait: float | None) -> None:
    (position,) = app.event_log().append([event])
    kind = type(event).__name__
    if wait is None:
        click.echo(f"recorded {kind} at log position {position}; the projector applies it")
        return
    with BlockingQuery.open(app.engine()) as query:
        query.wait_for(position, timeout=wait)
    click.echo(f"recorded {kind} at log position {position}; applied")


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _when(item: PageItem) -> str:
    published = item.published
    return published.strftime("%Y-%m-%d %H:%M") if published is not None else ""


def _summary(item: PageItem, width: int = 60) -> str:
    parsed = item.parsed
    text = ""
    if isinstance(parsed, dict):
        text = str(parsed.get("title") or parsed.get("content") or "")
    if not text and item.payload:
        text = re.sub(r"\s+", " ", item.payload)
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_items(service: str, node: str, items: Sequence[PageItem]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "publisher", "published", "summary", title=f"{node} on {service}", box=None)
    for item in items:
        table.add_row(item.id, item.publisher or "", _when(item), _summary(item))
    Console(soft_wrap=True).print(table)


def _print_nodes(found: Sequence[NodeState]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "node", "type", "sync", "items", "to sync", box=None)
    for state in found:
        sync = state.sync_state + (" (requested)" if state.sync_requested else "")
        kind = "/".join(part for part in (state.type, state.subtype) if part)
        table.add_row(
            state.service,
            state.node,
            kind,
            sync,
            str(state.item_count),
            "yes" if state.to_sync else "no",
        )
    Console(soft_wrap=True).print(table)
    click.echo(f"{len(found)} nodes")
