"""``pubsub-cache log export|import|compact``: the event log as a file, and its retention."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import BinaryIO

import click

from pubsub_cache.events.errors import UndecodableEvent
from pubsub_cache.events.transfer import export_log, format_for, import_log, read_export
from pubsub_cache.projector.compact import compact, lowest_checkpoint

from .context import AppContext
from .progress import Reporter

#: Exit status when the export is written but left out undecodable events (done, but no).
EXIT_INCOMPLETE = 3

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
    """Write every event to FILE (``-`` for standard output).

    An event that cannot be decoded is left out with one line naming its position and error;
    the export then exits with status 3.
    """
    undecodable: list[UndecodableEvent] = []
    with ExitStack() as stack:
        out: BinaryIO = sys.stdout.buffer if file == "-" else stack.enter_context(open(file, "wb"))
        report = stack.enter_context(Reporter("export"))
        count = export_log(
            app.event_log(),
            out,
            fmt=format_for(file, fmt),
            progress=report,
            on_undecodable=_reporting(undecodable, "left out"),
        )
    click.echo(f"exported {count} events", err=True)
    if undecodable:
        click.echo(f"left out {len(undecodable)} undecodable events", err=True)
        raise click.exceptions.Exit(EXIT_INCOMPLETE)


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
    undecodable: list[UndecodableEvent] = []
    removed = compact(engine, on_undecodable=_reporting(undecodable, "kept"))
    click.echo(f"removed {removed} events at or below position {upto}")
    if undecodable:
        click.echo(f"kept {len(undecodable)} undecodable events (see `parked list`)", err=True)


def _reporting(seen: list[UndecodableEvent], what: str) -> Callable[[UndecodableEvent], None]:
    def report(error: UndecodableEvent) -> None:
        seen.append(error)
        click.echo(f"{what}: {error}", err=True)

    return report
