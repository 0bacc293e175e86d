"""``pubsub-cache status`` as text: the whole cache's figures, then a table of the accounts.

::

    account        state      for   items  lag                   nodes
    a@example.org  connected  3 h   1,204  caught up             COMPLETED 12 · PARTIAL 1 · ERROR 0
      recorded by host:811:3fa2c1d0
    b@example.org  failed     12 s  0      3 events, oldest 9 s  ERROR 0
      authentication failed (recorded by host:811:3fa2c1d0)

A node count shows when it is not 0, and ``ERROR`` always (the one to watch); the reason and the
process that recorded the state go on the line below their account.
"""

from __future__ import annotations

from collections.abc import Iterator

from pubsub_cache.projector.status import AccountStatus, Status

_HEADER = ("account", "state", "for", "items", "lag", "nodes")


def status_lines(report: Status, *, now: float) -> Iterator[str]:
    """The lines ``status`` prints for ``report``, read at ``now``."""
    yield f"log head: {report.head}"
    for point in report.checkpoints:
        lease = point.lease_owner or "free"
        yield (
            f"checkpoint {point.name}: position {point.position}, lag {point.lag_events} events "
            f"/ {point.lag_seconds:.1f} s, lease {lease}"
        )
    if not report.checkpoints:
        yield "no projector has run yet"
    yield "nodes: " + ", ".join(f"{state} {n}" for state, n in report.nodes.items())
    yield f"items: {report.items}"
    yield f"parked events: {report.parked}"
    yield f"rejected notifications: {report.rejected}"
    yield f"items that did not parse: {report.parse_errors}"
    if report.rebuild is not None:
        position = report.rebuild.position
        yield f"rebuild begun, not finished: position {position} (`replay` resumes it)"
    if report.accounts:
        yield ""
        yield from account_table(report.accounts, now=now)


def account_table(accounts: list[AccountStatus], *, now: float) -> Iterator[str]:
    """One row per account (aligned columns), its reason and recorder on the line below."""
    rows = [_HEADER] + [
        (
            account.account,
            account.state,
            "-" if account.since is None else duration(now - account.since),
            f"{account.items:,}",
            _lag(account),
            _nodes(account.nodes),
        )
        for account in accounts
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER) - 1)]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        yield "  ".join([*cells, row[-1]]).rstrip()
        if index:
            detail = _detail(accounts[index - 1])
            if detail:
                yield f"  {detail}"


def duration(seconds: float) -> str:
    """``seconds`` in the unit a reader takes in at a glance (s, min, h, d), rounded down."""
    seconds = max(0.0, seconds)
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < up_to:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds // 86400)} d"


def _lag(account: AccountStatus) -> str:
    if not account.lag_events:
        return "caught up"
    events = "1 event" if account.lag_events == 1 else f"{account.lag_events:,} events"
    return f"{events}, oldest {duration(account.lag_seconds)}"


def _nodes(nodes: dict[str, int]) -> str:
    shown = [(state, n) for state, n in nodes.items() if n or state == "ERROR"]
    return " · ".join(f"{state} {n:,}" for state, n in shown)


def _detail(account: AccountStatus) -> str:
    reason = account.reason or ""
    if account.owner is None or account.owner in reason:  # a stale one's reason names it
        return reason
    recorder = f"recorded by {account.owner}"
    return f"{reason} ({recorder})" if reason else recorder
