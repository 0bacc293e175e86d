"""How the read commands print for a human: tables of items and nodes (``--json`` aside)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import click

from pubsub_cache.query.model import NodeState, PageItem, SearchHit
from pubsub_cache.query.paths import JsonPath

from .cli_output import cell, key_value


def when(item: PageItem) -> str:
    """The item's publication time, to the minute."""
    published = item.published
    return published.strftime("%Y-%m-%d %H:%M") if published is not None else ""


def summary(item: PageItem, width: int = 60) -> str:
    """A one-line summary: the parsed title or content, else the raw payload's text."""
    parsed = item.parsed
    text = ""
    if isinstance(parsed, dict):
        text = str(parsed.get("title") or parsed.get("content") or "")
    if not text and item.payload:
        text = re.sub(r"\s+", " ", item.payload)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_items(
    service: str, node: str, items: Sequence[PageItem], keys: Sequence[JsonPath] = ()
) -> None:
    """The items of one node as a table (with ``keys``: the id and those parsed keys)."""
    from rich.console import Console
    from rich.table import Table

    title = f"{node} on {service}"
    if keys:
        table = Table("id", *(path.text for path in keys), title=title, box=None)
        for item in items:
            table.add_row(item.id, *(cell(key_value(item, path)) for path in keys))
    else:
        table = Table("id", "publisher", "published", "summary", title=title, box=None)
        for item in items:
            table.add_row(item.id, item.publisher or "", when(item), summary(item))
    Console(soft_wrap=True).print(table)


def print_hits(hits: Sequence[SearchHit], keys: Sequence[JsonPath] = ()) -> None:
    """Search hits (items of any node) as a table (with ``keys``: those parsed keys)."""
    from rich.console import Console
    from rich.table import Table

    if keys:
        table = Table("service", "node", "id", *(path.text for path in keys), box=None)
        for hit in hits:
            values = (cell(key_value(hit.item, path)) for path in keys)
            table.add_row(hit.service, hit.node, hit.item.id, *values)
    else:
        table = Table("service", "node", "id", "published", "summary", box=None)
        for hit in hits:
            table.add_row(hit.service, hit.node, hit.item.id, when(hit.item), summary(hit.item))
    Console(soft_wrap=True).print(table)


def print_nodes(found: Sequence[NodeState]) -> None:
    """Nodes with their type and sync state as a table, then their number."""
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
