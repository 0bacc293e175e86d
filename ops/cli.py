"""The ``pubsub-cache`` command line: one group, sub-commands loaded from their modules.

Every way a command can end maps to one exit status (see :mod:`.cli_errors`): errors the user
can act on print one line (one JSON object under ``--json``); tracebacks are reserved for bugs.

Start-up time is part of every cached read from a shell (DESIGN.md, performance targets): a
command's module, and what it imports (SQLAlchemy, Alembic, slixmpp, the benchmarks), is
imported only when that command runs. ``--help`` lists the commands from :data:`COMMANDS`,
whose short help a test keeps equal to the commands' own (tests/cli/test_startup.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import NamedTuple

import click

from .context import AppContext


class Lazy(NamedTuple):
    """Where a command is defined (``module:attribute``), and its short help for listings."""

    target: str
    short_help: str


class LazyGroup(click.Group):
    """A group whose sub-commands are imported when they run (or when their own help is shown)."""

    def __init__(self, *args: object, lazy: Mapping[str, Lazy] = {}, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].target.split(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), self.lazy[cmd_name]
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in self.commands:  # already loaded: as click would list it
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, _shorten(self.lazy[name].short_help, limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word, as click lists a long first sentence."""
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0] + "..."


_OPS = "pubsub_cache.ops."

#: Every command of ``pubsub-cache``: where it is, and its short help (kept equal to the
#: command's own by a test).
COMMANDS = {
    "bench": Lazy(
        _OPS + "bench.cli:bench",
        "Benchmarks: a table, then `ratio=... target=...` as the last line.",
    ),
    "db": Lazy(
        _OPS + "cli_db:db", "Database schema (applied automatically by every other command)."
    ),
    "get": Lazy(
        _OPS + "cli_query:get",
        "Items of NODE on SERVICE, oldest first: from the cache, or live when it is not synced.",
    ),
    "ingest": Lazy(
        _OPS + "cli_daemon:ingest",
        "The ingest alone: XMPP notifications and syncs into the log (no projector).",
    ),
    "log": Lazy(_OPS + "cli_log:log", "The event log itself: export, import, compaction."),
    "nodes": Lazy(
        _OPS + "cli_query:nodes",
        "The nodes the cache knows for the account, with their sync state.",
    ),
    "parked": Lazy(_OPS + "cli_projector:parked", "Events the projector could not apply."),
    "project": Lazy(
        _OPS + "cli_projector:project",
        "Run the projector alone (the ingest may run elsewhere on the same database).",
    ),
    "purge": Lazy(
        _OPS + "cli_purge:purge",
        "Forget cached items (recorded as a CachePurged event; synced nodes must sync again).",
    ),
    "replay": Lazy(
        _OPS + "cli_replay:replay",
        "Rebuild the read model from position 0 while the live one keeps serving, then swap.",
    ),
    "reset": Lazy(
        _OPS + "cli_purge:reset",
        "Forget nodes: their items and sync state (recorded as a CacheReset event).",
    ),
    "run": Lazy(
        _OPS + "cli_daemon:run",
        "The daemon: ingest and projector together, until SIGTERM or SIGINT.",
    ),
    "search": Lazy(_OPS + "cli_search:search", "Search the cached items of the account."),
    "status": Lazy(
        _OPS + "cli_projector:status",
        "Head of the log, each checkpoint's lag, parked events, nodes by sync state.",
    ),
    "sync": Lazy(
        _OPS + "cli_sync:sync",
        "Synchronise NODE of SERVICE: record the request, which the daemon carries out.",
    ),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="PUBSUB_CACHE_CONFIG",
    help="TOML file of settings (environment variables PUBSUB_CACHE_* take precedence).",
)
@click.version_option(package_name="pubsub-cache")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """An event-sourced cache of XMPP pubsub nodes and items.

    Exit statuses: 0 done; 1 runtime failure; 2 bad usage, configuration or credentials;
    3 done, but the answer is no (verify differs, a sync ended ERROR or PARTIAL, an export
    left events out).
    """
    from .logs import quiet_libraries

    quiet_libraries()
    app = ctx.ensure_object(AppContext)
    if config_file is not None:
        from pathlib import Path  # here: ``--help`` need not import it

        app.config_file = Path(config_file)
    ctx.call_on_close(app.close)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: runs one command, returns its exit status."""
    app = AppContext()
    try:
        # Without standalone mode, click returns the status of a click.exceptions.Exit raised
        # by a command (e.g. 3: done, but the answer is no) instead of exiting with it.
        status = cli.main(args=argv, prog_name="pubsub-cache", standalone_mode=False, obj=app)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (Exception, KeyboardInterrupt) as error:
        from .cli_errors import classify

        failure = classify(error)
        if failure is None:
            raise
        failure.show(as_json=app.json_output)
        return failure.status
    if isinstance(status, int):
        return status
    from .cli_errors import EXIT_OK

    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
