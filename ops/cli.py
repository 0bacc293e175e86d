"""The ``pubsub-cache`` command line: one group, sub-commands registered from their modules.

Every way a command can end maps to one exit status (see :mod:`.cli_errors`): errors the user
can act on print one line (one JSON object under ``--json``); tracebacks are reserved for bugs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_errors import EXIT_OK, classify
from .context import AppContext


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
    """An event-sourced cache of XMPP pubsub nodes and items.

    Exit statuses: 0 done; 1 runtime failure; 2 bad usage, configuration or credentials;
    3 done, but the answer is no (verify differs, a sync ended ERROR or PARTIAL, an export
    left events out).
    """
    from .logs import quiet_libraries

    quiet_libraries()
    app = ctx.ensure_object(AppContext)
    app.config_file = config_file
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: runs one command, returns its exit status."""
    _register()
    app = AppContext()
    try:
        # Without standalone mode, click returns the status of a click.exceptions.Exit raised
        # by a command (e.g. 3: done, but the answer is no) instead of exiting with it.
        status = cli.main(args=argv, prog_name="pubsub-cache", standalone_mode=False, obj=app)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (Exception, KeyboardInterrupt) as error:
        failure = classify(error)
        if failure is None:
            raise
        failure.show(as_json=app.json_output)
        return failure.status
    return status if isinstance(status, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
