"""Asking before a command forgets something (``purge``, ``reset``, ``parked drop``).

On a terminal the command asks ``[y/N]`` on stderr (stdout stays the command's answer, JSON
too); ``-f/--force`` skips the question. Without a terminal on stdin there is nobody to ask, so
the command refuses (exit status 2) unless forced: a script that forgets data says so with
``--force``. Answering anything but yes ends the command with status 1 and nothing recorded.
"""

from __future__ import annotations

import sys

import click

from .cli_errors import EXIT_FAILURE, Failure


def confirm(question: str, *, what: str, force: bool, as_json: bool) -> None:
    """Return when the command may go ahead: forced, or ``question`` answered yes on a
    terminal. ``what`` names the action in the refusal (``purge of 3 nodes of romeo@...``)."""
    if force:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{what}: refusing without a terminal; add --force")
    if click.confirm(question, default=False, err=True):
        return
    Failure(EXIT_FAILURE, "declined", f"{what}: not done (answered no)").show(as_json=as_json)
    raise click.exceptions.Exit(EXIT_FAILURE)


def plural(count: int, noun: str) -> str:
    """``1 node``, ``1,234 items``: a count with its noun, thousands separated."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
