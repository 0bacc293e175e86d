"""``pubsub-cache replay``: rebuild the read model from the log, blue/green."""

from __future__ import annotations

from typing import Any

import click

from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.rebuild import Rebuild

from .cli_errors import EXIT_NO
from .cli_options import POSITIVE, emit, json_option
from .context import AppContext
from .progress import Reporter


@click.command()
@click.option("--verify", is_flag=True, help="Compare digests of rebuilt and live; swap nothing.")
@click.option("--dry-run", is_flag=True, help="Rebuild aside, print its digest, then discard it.")
@click.option("--fresh", is_flag=True, help="Start from position 0 even if a rebuild was begun.")
@click.option("--batch-size", default=1000, show_default=True, type=POSITIVE)
@click.option("--name", default="main", show_default=True, help="Live projector checkpoint.")
@json_option
@click.pass_obj
def replay(
    app: AppContext,
    verify: bool,
    dry_run: bool,
    fresh: bool,
    batch_size: int,
    name: str,
    as_json: bool,
) -> None:
    """Rebuild the read model from position 0 while the live one keeps serving, then swap.

    With --verify, exits with status 3 when the rebuilt read model differs from the live one.
    """
    engine = app.engine(create=False)
    rebuild = Rebuild(engine, default_registry(), live=name, batch_size=batch_size, verify=verify)
    start = rebuild.prepare(fresh=fresh)
    if start and not as_json:
        click.echo(f"resuming the rebuild at position {start}", err=True)
    with Reporter("replay", start=start) as report:
        position = rebuild.catch_up(report)
    done = report.summary(position - start)
    document: dict[str, Any] = {"replayed": done.as_dict(), "resumed_at": start}
    if not as_json:
        click.echo(done.line("replayed"), err=True)
    if dry_run:
        digest = rebuild.shadow_digest()
        rebuild.discard()
        _say(
            as_json,
            {**document, "position": position, "rebuilt_digest": digest, "swapped": False},
            f"rebuilt up to position {position}; digest {digest}",
            "dry run: the live read model was not changed",
        )
        return
    result = rebuild.finish(swap=not verify, verify=verify)
    document |= {"position": result.position, "swapped": result.swapped}
    if verify:
        document |= {
            "live_digest": result.live_digest,
            "rebuilt_digest": result.rebuilt_digest,
            "identical": result.identical,
        }
        verdict = (
            f"identical at position {result.position}"
            if result.identical
            else f"the rebuilt read model differs from the live one at {result.position}"
        )
        _say(
            as_json,
            document,
            f"live    {result.live_digest}",
            f"rebuilt {result.rebuilt_digest}",
            verdict,
        )
        if not result.identical:
            raise click.exceptions.Exit(EXIT_NO)
        return
    rebuild.clean_up()
    _say(as_json, document, f"swapped in the rebuilt read model at position {result.position}")


def _say(as_json: bool, document: dict[str, Any], *lines: str) -> None:
    if as_json:
        emit(document)
        return
    for line in lines:
        click.echo(line)
