"""``pubsub-cache search``: the cached items of an account, by parsed fields, words, node type.

Repeated node filters (``--type a --type b``, ``--subtype``, ``--service``, ``--node``) keep
items matching any of their values; different filters all apply. ``--sort`` (or ``--order``,
its older name) is repeatable: the keys apply in order, e.g. ``--sort -published --sort title``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import click

from pubsub_cache.query import BlockingQuery, Filter

from .cli_options import COUNT, account_of, account_option, aware, emit, filter_value, json_option
from .cli_output import item_xml, key_option, key_paths, keyed, output_of, output_option, print_xml
from .cli_tables import print_hits
from .context import AppContext

#: Words a Libervia user sorts by, for the query library's names of the same orders.
SORT_NAMES = {"published": "publication", "created": "creation", "updated": "modification"}


def sort_key(key: str) -> str:
    """``key`` with a Libervia name (``-published``) turned into the library's (``-publication``);
    other names and parsed paths pass as they are."""
    sign = key[0] if key[:1] in ("+", "-") else ""
    name = key[len(sign) :]
    return sign + SORT_NAMES.get(name, name)


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
@click.option(
    "--type", "node_types", multiple=True, help="Only nodes of this type (repeatable: any)."
)
@click.option("--subtype", "subtypes", multiple=True, help="Only nodes of this subtype (any).")
@click.option("-s", "--service", "services", multiple=True, help="Only this service (any).")
@click.option("-n", "--node", "nodes", multiple=True, help="Only this node (any).")
@click.option("--since", type=click.DateTime(), help="Published at or after (UTC if no zone).")
@click.option("--until", type=click.DateTime(), help="Published before (UTC if no zone).")
@click.option(
    "--sort",
    "--order",
    "orders",
    multiple=True,
    help="published (or publication), created, updated, service, or a parsed path; '-' first "
    "for descending; repeatable, applied in order [default: -published].",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=COUNT)
@account_option
@output_option
@key_option
@json_option
@click.pass_obj
def search(
    app: AppContext,
    fields: Sequence[tuple[str, str, str]],
    text: str | None,
    node_types: Sequence[str],
    subtypes: Sequence[str],
    services: Sequence[str],
    nodes: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    orders: Sequence[str],
    limit: int,
    offset: int,
    account: str | None,
    output: str | None,
    keys: Sequence[str],
    as_json: bool,
) -> None:
    """Search the cached items of the account.

    Under --json the matches are under "items" (each with its service and node), as with
    `get`; "hits" repeats them for scripts written before (deprecated). With -k, each item
    holds only its service, node, id and those keys (and "hits" is left out).
    """
    shown = output_of(output, as_json, keys)
    paths = key_paths(keys)
    filters = [Filter(path, op, filter_value(value)) for path, op, value in fields]
    viewer = account_of(app, account)
    with BlockingQuery.open(app.engine(create=False)) as query:
        result = query.search(
            viewer,
            filters=filters,
            text=text,
            service=list(services) or None,
            node=list(nodes) or None,
            type=list(node_types) or None,
            subtype=list(subtypes) or None,
            published_after=None if since is None else aware(since),
            published_before=None if until is None else aware(until),
            order_by=[sort_key(key) for key in orders] or "-publication",
            limit=limit,
            offset=offset,
        )
    if shown == "json":
        document = result.as_dict()
        if paths:
            document.pop("hits")
            items = [
                keyed(hit.item, paths, service=hit.service, node=hit.node) for hit in result.hits
            ]
            emit({**document, "items": items})
        else:
            emit({"items": document["hits"], **document})
        return
    if shown == "xml":
        print_xml([item_xml(hit.item, service=hit.service, node=hit.node) for hit in result.hits])
        return
    print_hits(result.hits, paths)
    click.echo(f"{len(result.hits)} of {result.total} matching items (offset {offset})")
