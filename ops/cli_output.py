"""How ``get`` and ``search`` print items: a table, JSON, or the items' XML; ``-k KEY`` picks
parsed keys.

``-O/--output`` chooses the format (``--json`` stays, as ``-O json``). ``xml`` prints each item
as the service sends it, ``<item id=... publisher=...>payload</item>``, inside one
``<items node=...>``. ``-k/--key PATH`` (repeatable) reads one key of each item's parsed JSON, a
path as search filters spell it (``author.name``, ``links[0].href``, see
:mod:`pubsub_cache.query.paths`): a column each in the table, or under --json each item holds
only its ``id`` (``service`` and ``node`` too for a search) and those keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import click

from pubsub_cache.query.errors import InvalidPath
from pubsub_cache.query.model import PageItem
from pubsub_cache.query.paths import JsonPath, parse_path

from .context import AppContext

Output = Literal["table", "json", "xml"]
OUTPUTS: tuple[Output, ...] = ("table", "json", "xml")


def _json_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # Eager, as --json: an error in a later option is then reported as JSON already.
    app = ctx.find_object(AppContext)
    if value == "json" and app is not None:
        app.json_output = True
    return value


output_option = click.option(
    "-O",
    "--output",
    type=click.Choice(OUTPUTS),
    is_eager=True,
    callback=_json_output,
    help="table (default), json (as --json) or xml (the items as the service sends them).",
)

key_option = click.option(
    "-k",
    "--key",
    "keys",
    multiple=True,
    metavar="PATH",
    help="A key of the parsed JSON to print, e.g. -k title -k author.name (repeatable).",
)


def output_of(output: str | None, as_json: bool, keys: Sequence[str]) -> Output:
    """The format asked for by ``-O`` and ``--json``; a usage error when they disagree."""
    if as_json and output not in (None, "json"):
        raise click.UsageError(f"--json and --output {output} disagree: give one")
    chosen: Output = (
        "json" if as_json or output == "json" else "xml" if output == "xml" else "table"
    )
    if keys and chosen == "xml":
        raise click.UsageError("-k/--key goes with the table or JSON output, not XML")
    return chosen


def key_paths(keys: Sequence[str]) -> list[JsonPath]:
    """The ``-k`` paths, checked (a usage error names the bad one)."""
    paths: list[JsonPath] = []
    for key in keys:
        try:
            paths.append(parse_path(key))
        except InvalidPath as exc:
            raise click.BadParameter(str(exc), param_hint="-k/--key") from None
    return paths


def key_value(item: PageItem, path: JsonPath) -> Any:
    """The value at ``path`` in the item's parsed JSON, or ``None`` where there is none."""
    value: Any = item.parsed
    for step in path.steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
    return value


def keyed(item: PageItem, paths: Sequence[JsonPath], **where: str) -> dict[str, Any]:
    """An item as ``-k`` prints it under --json: its id (and ``where``), then each key."""
    return {**where, "id": item.id, **{path.text: key_value(item, path) for path in paths}}


def cell(value: Any) -> str:
    """A parsed value as a table cell: text as it is, anything else as JSON."""
    import json

    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def item_xml(item: PageItem, **where: str) -> str:
    """The item as the service sends it: ``<item id=... publisher=...>payload</item>``."""
    attributes = {"id": item.id, **where}
    if item.publisher:
        attributes["publisher"] = item.publisher
    opening = "<item " + " ".join(f"{name}={quoteattr(v)}" for name, v in attributes.items())
    if item.payload is None:  # notify-only: the service sent the id alone
        return opening + "/>"
    return f"{opening}>{item.payload}</item>"


def print_xml(items: Sequence[str], **where: str) -> None:
    """XML elements of items, one a line, inside ``<items ...>``."""
    attributes = "".join(f" {name}={quoteattr(value)}" for name, value in where.items())
    click.echo(f"<items{attributes}>")
    for element in items:
        click.echo(f"  {element}")
    click.echo("</items>")
