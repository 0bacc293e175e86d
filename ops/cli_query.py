"""``pubsub-cache get`` and ``nodes``: the cache from a shell (``search``, ``purge`` and
``reset`` live beside this module and are registered here).

Reads go through the query library, as a client program's would: ``get`` answers from the cache
when the node is synced, and otherwise reads live with the configured account (unless
``--cache-only``). Human-readable tables by default; ``--json`` prints one JSON document. The
account defaults to ``PUBSUB_CACHE_JID``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import click

from pubsub_cache.query import NotCached, Page, Query, RsmRequest
from pubsub_cache.query.model import ORDERS

from .cli_options import COUNT, SECONDS, account_of, account_option, emit, json_option
from .cli_tables import print_items, print_nodes
from .cli_target import NODE, SERVICE, WORDS, resolve
from .context import AppContext


def register(cli: click.Group) -> None:
    """Add the read and operator commands to ``cli``."""
    from .cli_purge import purge, reset
    from .cli_search import search

    for command in (get, search, nodes, purge, reset):
        cli.add_command(command)


@click.command()
@WORDS
@SERVICE
@NODE
@click.option("-M", "--max", "max_", type=COUNT, help="RSM page size (0: count only).")
@click.option("-i", "--item", "item_ids", multiple=True, help="Only this item id (repeatable).")
@click.option("-a", "--after", help="RSM: the page after this item id.")
@click.option("-b", "--before", help="RSM: the page before this item id; '' for the last page.")
@click.option("--index", type=COUNT, help="RSM: the page starting here.")
@click.option("-m", "--max-items", type=COUNT, help="Only the newest N items.")
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="service",
    show_default=True,
    help="service: the order the service itself answers in.",
)
@account_option
@click.option("--cache-only", is_flag=True, help="Never read live: an unsynced node is an error.")
@click.option(
    "--timeout", type=SECONDS, default=10.0, show_default=True, help="Seconds for a live read."
)
@json_option
@click.pass_obj
def get(
    app: AppContext,
    words: Sequence[str],
    service_option: str | None,
    node_option: str | None,
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

    SERVICE defaults to the account's own PEP service; `-s SERVICE -n NODE` or an xmpp: URI
    (xmpp:pubsub.example.org?;node=blog;item=first) say the same. XEP-0059 paging: --max alone
    gives the first (oldest) page, --before '' the last (newest).
    """
    viewer = account_of(app, account)
    target = resolve(words, service=service_option, node=node_option, own=viewer)
    service, node = target.service, target.node
    if target.item is not None:
        item_ids = [*item_ids, target.item]
    rsm = None
    if any(value is not None for value in (max_, after, before, index)):
        rsm = RsmRequest(max=max_, after=after, before=before, index=index)
    request: dict[str, Any] = {
        "item_ids": list(item_ids) or None,
        "max_items": max_items,
        "rsm": rsm,
        "order_by": order,
    }
    live = not cache_only and viewer == app.settings.jid and bool(app.settings.password)
    page = anyio.run(_get, app, viewer, service, node, request, live, timeout)
    if as_json:
        emit(page.as_dict())
        return
    print_items(service, node, page.items)
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
    engine = app.engine(create=False)
    async with Query.open(engine, event_log=app.event_log(), live_timeout=timeout) as query:
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


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--type", "node_type", help="Only nodes of this type.")
@click.option(
    "--state", type=click.Choice(["NONE", "IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR"])
)
@click.option("--deleted", is_flag=True, help="Include deleted nodes.")
@account_option
@json_option
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
        app.engine(create=False),
        account_of(app, account),
        service=service,
        type=node_type,
        sync_state=state,
        include_deleted=deleted,
    )
    if as_json:
        emit([state.as_dict() for state in found])
        return
    print_nodes(found)
