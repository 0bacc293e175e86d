"""``pubsub-cache search``: the cached items of an account, by parsed fields, words, node type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import click

from pubsub_cache.query import BlockingQuery, Filter

from .cli_options import COUNT, account_of, account_option, aware, emit, filter_value, json_option
from .cli_tables import print_hits
from .context import AppContext


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
@click.option("--offset", default=0, show_default=True, type=COUNT)
@account_option
@json_option
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
    """Search the cached items of the account.

    Under --json the matches are under "items" (each with its service and node), as with
    `get`; "hits" repeats them for scripts written before (deprecated).
    """
    filters = [Filter(path, op, filter_value(value)) for path, op, value in fields]
    viewer = account_of(app, account)
    with BlockingQuery.open(app.engine(create=False)) as query:
        result = query.search(
            viewer,
            filters=filters,
            text=text,
            service=service,
            node=node,
            type=node_type,
            subtype=subtype,
            published_after=None if since is None else aware(since),
            published_before=None if until is None else aware(until),
            order_by=list(orders) or "-publication",
            limit=limit,
            offset=offset,
        )
    if as_json:
        document = result.as_dict()
        emit({"items": document["hits"], **document})
        return
    print_hits(result.hits)
    click.echo(f"{len(result.hits)} of {result.total} matching items (offset {offset})")
