"""Options and value types shared by the commands, checked where click parses them.

A value a command cannot use (a NaN timeout, an offset past what the database stores, a JID
with two ``@``) is refused here as bad usage (exit status 2, one line), before any database or
server sees it.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from .context import AppContext
from .jid import bare_jid

#: Largest integer both databases store (a signed 64-bit INTEGER/BIGINT).
MAX_INT = 2**63 - 1

#: A count, offset or limit: 0 up to what the database stores.
COUNT = click.IntRange(0, MAX_INT)
#: A log position, a batch size: 1 up to what the database stores.
POSITIVE = click.IntRange(1, MAX_INT)


class Seconds(click.ParamType[float, Any]):
    """A finite number of seconds, greater than 0 (``nan``, ``inf`` and ``-1`` are refused)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """The value as a float, or a usage error saying why not."""
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} is not a positive, finite number of seconds", param, ctx)
        return seconds


SECONDS = Seconds()


class BareJid(click.ParamType[str, Any]):
    """A bare account JID (``user@example.org``), checked and normalised by slixmpp's rules."""

    name = "jid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The normalised bare JID, or a usage error saying what is wrong."""
        try:
            return bare_jid(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _json_mode(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    # Eager, so that an error in any later option is already reported as JSON.
    app = ctx.find_object(AppContext)
    if value and app is not None:
        app.json_output = True
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    is_eager=True,
    callback=_json_mode,
    help="Print one JSON document (an error too: {error, kind, status}).",
)

account_option = click.option(
    "--account",
    type=BareJid(),
    help="Bare JID whose view to use [default: PUBSUB_CACHE_JID, else the only account of "
    "the accounts file].",
)

force_option = click.option(
    "-f", "--force", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)


def account_of(app: AppContext, account: str | None) -> str:
    """The account chosen with ``--account``, else ``PUBSUB_CACHE_JID``, else the only account
    of the accounts file; a usage error naming the configured accounts when that is ambiguous."""
    if account:
        return account
    settings = app.settings
    if settings.jid:
        return settings.jid
    listed = [each.jid for each in settings.accounts]
    if len(listed) == 1:
        return listed[0]
    if listed:
        shown = ", ".join(listed[:10]) + (
            f" and {len(listed) - 10} more" if len(listed) > 10 else ""
        )
        raise click.UsageError(f"which account? give --account (configured: {shown})")
    raise click.UsageError(
        "no account: give --account JID, set PUBSUB_CACHE_JID or list one in the accounts file"
    )


def emit(document: Any) -> None:
    """Print ``document`` as indented JSON on stdout."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def moment_before(value: str, *, option: str) -> datetime:
    """The moment ``value`` names: a duration back from now (90s, 15m, 12h, 30d, 2w) or an
    ISO date-time (UTC when it has no zone)."""
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        try:
            return datetime.now(UTC) - timedelta(**{unit: amount})
        except OverflowError:
            raise click.BadParameter(
                f"{value!r} reaches back before the year 1", param_hint=option
            ) from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration (90s, 15m, 12h, 30d, 2w) or an ISO date-time, got {value!r}",
            param_hint=option,
        ) from None
    return aware(moment)


def aware(moment: datetime) -> datetime:
    """``moment`` with UTC as its zone when it has none."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def filter_value(text: str, *, option: str = "--field") -> Any:
    """A filter's VALUE: JSON when it parses (5, true, null, ["a","b"], "5"), else the text.

    Numbers must fit the databases: integers in 64 bits, floats finite.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    _check_number(value, text, option)
    return value


def _check_number(value: Any, text: str, option: str) -> None:
    if isinstance(value, list):
        for element in value:
            _check_number(element, text, option)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise click.BadParameter(
            f"{text} is out of range (integers fit in 64 bits; quote it for text)",
            param_hint=option,
        )
    elif isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{text} is not a finite number", param_hint=option)
