"""``pubsub-cache log export|import|compact``: the event log as a file, and its retention."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import BinaryIO

import click

from pubsub_cache.events.transfer import export_log, format_for, import_log, read_export
from pubsub_cache.projector.compact import compact, lowest_checkpoint

from .context import AppContext
from .progress import Reporter

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "msgpack"]),
    help="Default: from the file name (.msgpack/.mpk), else NDJSON.",
)


def register(cli: click.Group) -> None:
    """Add this module's commands to ``cli``."""
    cli.add_command(log)


@click.group()
def log() -> None:
    """The event log itself: export, import, compaction."""


@log.command("export")
@click.argument("file")
@_FORMAT
@click.pass_obj
def export_command(app: AppContext, file: str, fmt: str | None) -> None:
    """Write every event to FILE (``-`` for standard output)."""
    with ExitStack() as stack:
        out: BinaryIO = sys.stdout.buffer if file == "-" else stack.enter_context(open(file, "wb"))
        report = stack.enter_context(Reporter("export"))
        count = export_log(app.event_log(), out, fmt=format_for(file, fmt), progress=report)
    click.echo(f"exported {count} events", err=True)


@log.command("import")
@click.argument("file")
@_FORMAT
@click.pass_obj
def import_command(app: AppContext, file: str, fmt: str | None) -> None:
    """Append the events of FILE (``-`` for standard input), keeping their positions."""
    with ExitStack() as stack:
        stream: BinaryIO = (
            sys.stdin.buffer if file == "-" else stack.enter_context(open(file, "rb"))
        )
        count = import_log(app.engine(), read_export(stream, fmt=format_for(file, fmt)))
    click.echo(f"imported {count} events; run `pubsub-cache replay` or the projector next")


@log.command("compact")
@click.pass_obj
def compact_command(app: AppContext) -> None:
    """Delete events made irrelevant, below the lowest projector checkpoint."""
    engine = app.engine()
    upto = lowest_checkpoint(engine)
    removed = compact(engine)
    click.echo(f"removed {removed} events at or below position {upto}")
