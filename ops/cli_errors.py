"""Exit statuses of every command, and how an error becomes one line (or one JSON object).

The statuses, defined here once (the README has the same table):

====== ==============================================================================
0      done
1      runtime failure (the XMPP server or database failed mid-way): worth retrying
2      bad usage, configuration or credentials: retrying will not help, fix the input
3      done, but the answer is no: ``replay --verify`` differs, ``sync --now`` ended
       ERROR, PARTIAL or found the node gone, ``log export`` left undecodable events out
130    interrupted (Ctrl-C)
====== ==============================================================================

An error the user can act on is printed as one line on stderr, ``pubsub-cache: <what>``, or
under ``--json`` as one object on stdout, ``{"error": <what>, "kind": <kind>, "status": N}``.
A traceback is printed only for an exception this module does not know: a bug.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass

import click

from pubsub_cache.errors import PubsubCacheError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO = 3
EXIT_INTERRUPTED = 130

#: OS errors that a retry cannot cure: a file the user named, a disk to free.
_USAGE_ERRNOS = {
    errno.ENOENT: "file",
    errno.EACCES: "file",
    errno.EPERM: "file",
    errno.EISDIR: "file",
    errno.ENOTDIR: "file",
    errno.EROFS: "file",
    errno.ENOSPC: "disk-full",
    errno.EDQUOT: "disk-full",
    errno.EFBIG: "file",
}


@dataclass(frozen=True)
class Failure:
    """An error as the user sees it: exit status, a stable ``kind`` for scripts, one line."""

    status: int
    kind: str
    message: str

    def show(self, *, as_json: bool) -> None:
        """Print it: one JSON object on stdout under ``--json``, else one line on stderr."""
        if as_json:
            document = {"error": self.message, "kind": self.kind, "status": self.status}
            click.echo(json.dumps(document, ensure_ascii=False))
        else:
            click.echo(f"pubsub-cache: {self.message}", err=True)


def classify(error: BaseException) -> Failure | None:
    """The :class:`Failure` ``error`` stands for, or ``None`` for a bug (let it raise)."""
    if isinstance(error, click.exceptions.Abort | KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "interrupted", "interrupted")
    if isinstance(error, click.ClickException):
        return _click_failure(error)
    if isinstance(error, PubsubCacheError):
        status, kind = _ours(error)
        return Failure(status, kind, _one_line(str(error)))
    return _environment_failure(error)


def _environment_failure(error: BaseException) -> Failure | None:
    if isinstance(error, OSError):
        known = _USAGE_ERRNOS.get(error.errno or 0)
        where = f"{error.filename}: " if error.filename else ""
        message = f"{where}{error.strerror or error}"
        status = EXIT_USAGE if known else EXIT_FAILURE
        return Failure(status, known or "os", _one_line(message))
    return _database_failure(error)


def _click_failure(error: click.ClickException) -> Failure:
    message = error.format_message()
    if isinstance(error, click.UsageError) and error.ctx is not None:
        message = f"{error.ctx.command_path}: {message} (see --help)"
        message = message.removeprefix("pubsub-cache ")
    status = EXIT_USAGE if error.exit_code in (1, 2) else error.exit_code
    kind = "usage" if isinstance(error, click.UsageError) else "file"
    return Failure(status, kind, _one_line(message))


def _ours(error: PubsubCacheError) -> tuple[int, str]:
    # Imported here: the error modules are light, but ``--help`` should load none of them.
    from pubsub_cache.events.db import DatabaseUnavailable
    from pubsub_cache.events.transfer import ImportConflict, MalformedExport
    from pubsub_cache.migrations.api import DatabaseNewerThanCode, UnknownRevision
    from pubsub_cache.query.errors import InvalidQuery, LiveFetchTimeout, NotCached
    from pubsub_cache.xmpp.errors import XmppConnectError, XmppError, XmppTimeout

    from .settings import ConfigError

    usage: list[tuple[type[PubsubCacheError], str]] = [
        (ConfigError, "config"),
        (DatabaseUnavailable, "database"),
        (DatabaseNewerThanCode, "database"),
        (UnknownRevision, "usage"),
        (InvalidQuery, "usage"),
        (MalformedExport, "input"),
        (ImportConflict, "input"),
    ]
    for kind_of, kind in usage:
        if isinstance(error, kind_of):
            return EXIT_USAGE, kind
    if isinstance(error, XmppConnectError):
        if is_credentials_problem(error.cause):
            return EXIT_USAGE, "credentials"
        return EXIT_FAILURE, "xmpp"
    if isinstance(error, LiveFetchTimeout | XmppTimeout):
        return EXIT_FAILURE, "timeout"
    if isinstance(error, NotCached):
        return EXIT_FAILURE, "not-cached"
    if isinstance(error, XmppError):
        return EXIT_FAILURE, "xmpp"
    return EXIT_FAILURE, "failure"


def is_credentials_problem(cause: str) -> bool:
    """Whether a failed connect is the account's fault (wrong password, no usable SASL
    mechanism, e.g. a server without STARTTLS): the same attempt would fail again."""
    from pubsub_cache.xmpp.ingest import FATAL

    return cause.startswith(FATAL)


def _database_failure(error: BaseException) -> Failure | None:
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return None
    original = error.orig
    full = getattr(original, "sqlite_errorcode", None) == 13 or (  # SQLITE_FULL
        getattr(original, "sqlstate", None) == "53100"  # PostgreSQL disk_full
    )
    detail = _one_line(str(original) if original is not None else str(error))
    if full:
        return Failure(EXIT_USAGE, "disk-full", f"the database is out of space: {detail}")
    return Failure(EXIT_FAILURE, "database", f"database error: {detail}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
