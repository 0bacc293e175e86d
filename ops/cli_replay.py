"""``pubsub-cache replay``: rebuild the read model from the log, blue/green."""

from __future__ import annotations

import click

from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.rebuild import Rebuild

from .context import AppContext
from .progress import Reporter

#: Exit status of ``replay --verify`` when the rebuilt model differs from the live one.
EXIT_DIFFERENT = 3


def register(cli: click.Group) -> None:
    """Add this module's commands to ``cli``."""
    cli.add_command(replay)


@click.command()
@click.option("--verify", is_flag=True, help="Compare digests of rebuilt and live; swap nothing.")
@click.option("--dry-run", is_flag=True, help="Rebuild aside, print its digest, then discard it.")
@click.option("--fresh", is_flag=True, help="Start from position 0 even if a rebuild was begun.")
@click.option("--batch-size", default=1000, show_default=True)
@click.option("--name", default="main", show_default=True, help="Live projector checkpoint.")
@click.pass_obj
def replay(
    app: AppContext, verify: bool, dry_run: bool, fresh: bool, batch_size: int, name: str
) -> None:
    """Rebuild the read model from position 0 while the live one keeps serving, then swap."""
    rebuild = Rebuild(app.engine(), default_registry(), live=name, batch_size=batch_size)
    start = rebuild.prepare(fresh=fresh)
    if start:
        click.echo(f"resuming the rebuild at position {start}", err=True)
    with Reporter("replay", start=start) as report:
        position = rebuild.catch_up(report)
    if dry_run:
        click.echo(f"rebuilt up to position {position}; digest {rebuild.shadow_digest()}")
        rebuild.discard()
        click.echo("dry run: the live read model was not changed")
        return
    result = rebuild.finish(swap=not verify, verify=verify)
    if verify:
        click.echo(f"live    {result.live_digest}")
        click.echo(f"rebuilt {result.rebuilt_digest}")
        if not result.identical:
            click.echo(f"the rebuilt read model differs from the live one at {result.position}")
            raise click.exceptions.Exit(EXIT_DIFFERENT)
        click.echo(f"identical at position {result.position}")
        return
    click.echo(f"swapped in the rebuilt read model at position {result.position}")
    rebuild.clean_up()
