"""The ``pubsub-cache`` command line: one group, sub-commands registered from their modules.

Errors the user can act on (a bad setting, an unreachable database, a schema newer than the
code) print one line naming the problem and exit with status 2; other detected conditions exit
with status 1. Tracebacks are reserved for bugs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pubsub_cache.errors import PubsubCacheError

from .context import AppContext

#: Exit status for problems of configuration or environment the user must fix.
EXIT_CONFIG = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="PUBSUB_CACHE_CONFIG",
    help="TOML file of settings (environment variables PUBSUB_CACHE_* take precedence).",
)
@click.version_option(package_name="pubsub-cache")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """An event-sourced cache of XMPP pubsub nodes and items."""
    app = AppContext(config_file=config_file)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from . import cli_db, cli_log, cli_projector, cli_query, cli_replay
    from .bench import cli as bench_cli

    cli.add_command(cli_db.db)
    cli.add_command(bench_cli.bench)
    cli_projector.register(cli)
    cli_replay.register(cli)
    cli_log.register(cli)
    cli_query.register(cli)
    from . import cli_daemon

    cli_daemon.register(cli)


def _exit_code(error: PubsubCacheError) -> int:
    from pubsub_cache.events.db import DatabaseUnavailable
    from pubsub_cache.migrations.api import DatabaseNewerThanCode

    from .settings import ConfigError

    if isinstance(error, ConfigError | DatabaseUnavailable | DatabaseNewerThanCode):
        return EXIT_CONFIG
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    _register()
    try:
        # Without standalone mode, click returns the status of a click.exceptions.Exit raised
        # by a command (e.g. 3: done, but the answer is no) instead of exiting with it.
        status = cli.main(args=argv, prog_name="pubsub-cache", standalone_mode=False)
    except PubsubCacheError as error:
        click.echo(f"pubsub-cache: {error}", err=True)
        return _exit_code(error)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
