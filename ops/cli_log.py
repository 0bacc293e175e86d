"""``pubsub-cache log export|import|compact``: the event log as a file, and its retention."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import BinaryIO

import click

from pubsub_cache.events.errors import UndecodableEvent
from pubsub_cache.events.log import RawRecord
from pubsub_cache.events.transfer import export_log, format_for, import_log, read_export
from pubsub_cache.projector.compact import compact, lowest_checkpoint, sweep_contents

from .cli_errors import EXIT_NO
from .cli_options import emit, json_option
from .context import AppContext
from .progress import Reporter

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "msgpack"]),
    help="Default: from the file name (.msgpack/.mpk), else NDJSON.",
)


@click.group()
def log() -> None:
    """The event log itself: export, import, compaction."""


@log.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@_FORMAT
@json_option
@click.pass_obj
def export_command(app: AppContext, file: str, fmt: str | None, as_json: bool) -> None:
    """Write every event to FILE (``-`` for standard output).

    An event that cannot be decoded is left out with one line naming its position and error;
    the export then exits with status 3.
    """
    if as_json and file == "-":
        raise click.UsageError("--json needs a FILE: the export itself would go to stdout")
    undecodable: list[UndecodableEvent] = []
    event_log = app.event_log(create=False)
    with ExitStack() as stack:
        out: BinaryIO = sys.stdout.buffer if file == "-" else stack.enter_context(open(file, "wb"))
        report = stack.enter_context(Reporter("export"))
        count = export_log(
            event_log,
            out,
            fmt=format_for(file, fmt),
            progress=report,
            on_undecodable=_reporting(undecodable, "left out", quiet=as_json),
        )
        out.flush()
    done = report.summary(count)
    if as_json:
        left_out = [{"position": error.position, "error": str(error)} for error in undecodable]
        emit({"exported": done.as_dict(), "file": file, "left_out": left_out})
    else:
        click.echo(done.line("exported"), err=True)
        if undecodable:
            click.echo(f"left out {len(undecodable)} undecodable events", err=True)
    if undecodable:
        raise click.exceptions.Exit(EXIT_NO)


@log.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@_FORMAT
@json_option
@click.pass_obj
def import_command(app: AppContext, file: str, fmt: str | None, as_json: bool) -> None:
    """Append the events of FILE (``-`` for standard input), keeping their positions."""
    with ExitStack() as stack:
        stream: BinaryIO = (
            sys.stdin.buffer if file == "-" else stack.enter_context(open(file, "rb"))
        )
        engine = app.engine()
        report = stack.enter_context(Reporter("import"))
        records = _counted(read_export(stream, fmt=format_for(file, fmt)), report)
        count = import_log(engine, records)
    done = report.summary(count)
    if as_json:
        emit({"imported": done.as_dict(), "file": file})
        return
    click.echo(f"{done.line('imported')}; run `pubsub-cache replay` or the projector next")


def _counted(records: Iterator[RawRecord], report: Reporter) -> Iterator[RawRecord]:
    for count, record in enumerate(records, 1):
        if count % 1000 == 0:
            report(count)
        yield record


@log.command("compact")
@json_option
@click.pass_obj
def compact_command(app: AppContext, as_json: bool) -> None:
    """Delete events made irrelevant, below the lowest projector checkpoint."""
    engine = app.engine(create=False)
    upto = lowest_checkpoint(engine)
    undecodable: list[UndecodableEvent] = []
    removed = compact(engine, on_undecodable=_reporting(undecodable, "kept", quiet=as_json))
    contents = sweep_contents(engine)
    if as_json:
        kept = [{"position": error.position, "error": str(error)} for error in undecodable]
        emit(
            {
                "removed": removed,
                "upto": upto,
                "kept_undecodable": kept,
                "removed_contents": contents,
            }
        )
        return
    click.echo(f"removed {removed} events at or below position {upto}")
    if contents:
        click.echo(f"removed {contents} payload contents no item referenced")
    if undecodable:
        click.echo(f"kept {len(undecodable)} undecodable events (see `parked list`)", err=True)


def _reporting(
    seen: list[UndecodableEvent], what: str, *, quiet: bool
) -> Callable[[UndecodableEvent], None]:
    def report(error: UndecodableEvent) -> None:
        seen.append(error)
        if not quiet:
            click.echo(f"{what}: {error}", err=True)

    return report
