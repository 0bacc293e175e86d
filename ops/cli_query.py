"""``pubsub-cache get`` and ``nodes``: the cache from a shell.

Reads go through the query library, as a client program's would: ``get`` answers from the cache
when the node is synced, and otherwise reads live with the account's own credentials (from
``PUBSUB_CACHE_JID``/``PASSWORD`` or the accounts file), unless ``--cache-only``; ``--no-cache``
always reads live. The table shows a first page of 10 items and says how many more there are
(Libervia's default); JSON and XML (``-O``, :mod:`.cli_output`) print every item, as scripts
written before the first page expect. The account: see :func:`.cli_options.account_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click

from pubsub_cache.query import NotCached, Page, Query, RsmRequest
from pubsub_cache.query.model import ORDERS

from .cli_options import COUNT, SECONDS, account_of, account_option, emit, json_option
from .cli_output import item_xml, key_option, key_paths, keyed, output_of, output_option, print_xml
from .cli_tables import print_items, print_nodes
from .cli_target import NODE, SERVICE, WORDS, resolve
from .context import AppContext

if TYPE_CHECKING:
    from .settings import AccountSettings


#: Items a bare ``get`` prints in the table (Libervia's default page).
FIRST_PAGE = 10


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
    "--all",
    "everything",
    is_flag=True,
    help=f"Every item in the table (a bare get prints the first {FIRST_PAGE}).",
)
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="service",
    show_default=True,
    help="service: the order the service itself answers in.",
)
@account_option
@click.option("--cache-only", is_flag=True, help="Never read live: an unsynced node is an error.")
@click.option("--no-cache", is_flag=True, help="Always read live, even a synced node.")
@click.option(
    "--timeout", type=SECONDS, default=10.0, show_default=True, help="Seconds for a live read."
)
@output_option
@key_option
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
    everything: bool,
    order: str,
    account: str | None,
    cache_only: bool,
    no_cache: bool,
    timeout: float,
    output: str | None,
    keys: Sequence[str],
    as_json: bool,
) -> None:
    """Items of NODE on SERVICE, oldest first: from the cache, or live when it is not synced.

    SERVICE defaults to the account's own PEP service; `-s SERVICE -n NODE` or an xmpp: URI
    (xmpp:pubsub.example.org?;node=blog;item=first) say the same. XEP-0059 paging: --max alone
    gives the first (oldest) page, --before '' the last (newest). The table shows the first
    10 items unless paged, --all shows every one; JSON and XML print every item.
    """
    shown = output_of(output, as_json, keys)
    paths = key_paths(keys)
    if cache_only and no_cache:
        raise click.UsageError("--cache-only and --no-cache exclude each other")
    viewer = account_of(app, account)
    target = resolve(words, service=service_option, node=node_option, own=viewer)
    service, node = target.service, target.node
    if target.item is not None:
        item_ids = [*item_ids, target.item]
    paged = any(value is not None for value in (max_, after, before, index))
    if everything and (paged or max_items is not None or item_ids):
        raise click.UsageError("--all goes alone: not with -M, -a, -b, --index, -m or -i")
    rsm = None
    if paged:
        rsm = RsmRequest(max=max_, after=after, before=before, index=index)
    first_page = shown == "table" and not everything and rsm is None and max_items is None
    first_page = first_page and not item_ids
    if first_page:
        rsm = RsmRequest(max=FIRST_PAGE)
    request: dict[str, Any] = {
        "item_ids": list(item_ids) or None,
        "max_items": max_items,
        "rsm": rsm,
        "order_by": order,
        "source": "live" if no_cache else "auto",
    }
    credentials = None if cache_only else app.settings.account(viewer)
    if no_cache and credentials is None:
        raise click.UsageError(
            f"--no-cache reads live, and {viewer} has no password configured "
            "(PUBSUB_CACHE_PASSWORD or the accounts file)"
        )
    page = anyio.run(_get, app, viewer, service, node, request, credentials, timeout)
    if shown == "json":
        if paths:
            emit({**page.as_dict(), "items": [keyed(item, paths) for item in page.items]})
        else:
            emit(page.as_dict())
        return
    if shown == "xml":
        print_xml([item_xml(item) for item in page.items], node=node, service=service)
        return
    print_items(service, node, page.items, paths)
    source = "cache" if page.from_cache else "live"
    rsm_set = page.rsm
    click.echo(
        f"{len(page.items)} items from the {source}; rsm first={rsm_set.first} "
        f"last={rsm_set.last} index={rsm_set.index} count={rsm_set.count}; "
        f"{'complete' if page.complete else 'maybe incomplete'}"
        + ("; sync requested" if page.sync_requested else "")
    )
    if first_page:
        more = None if rsm_set.count is None else rsm_set.count - len(page.items)
        if more is None and len(page.items) == FIRST_PAGE:
            click.echo("… maybe more: -M/--max N or --all")
        elif more:
            click.echo(f"… and {more:,} more: -M/--max N or --all")


async def _get(
    app: AppContext,
    account: str,
    service: str,
    node: str,
    request: dict[str, Any],
    credentials: AccountSettings | None,
    timeout: float,
) -> Page:
    # The cache first, without connecting: most reads never need the XMPP session.
    engine = app.engine(create=False)
    async with Query.open(engine, event_log=app.event_log(), live_timeout=timeout) as query:
        if request["source"] == "auto":
            try:
                return await query.get_items(account, service, node, **request)
            except NotCached:
                if credentials is None:
                    raise
        assert credentials is not None  # checked by the command for --no-cache
        from pubsub_cache.xmpp.client import session

        async with session(
            credentials.jid,
            credentials.secret(),  # a password_command runs only now, reading live
            host=credentials.xmpp_host,
            port=credentials.xmpp_port,
            tls=credentials.xmpp_tls,
            timeout=timeout,
            request_timeout=timeout,
            presence=False,  # a request and its answer: the account need not show online
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
