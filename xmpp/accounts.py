"""Many accounts in one process: one :class:`~.ingest.Ingest` per account, side by side.

::

    pool = IngestPool(engine, EventLog(engine), directory, options=options)
    async with anyio.create_task_group() as group:
        await group.start(pool.run, accounts)   # returns once every account has started
        pool.update(other_accounts)             # adds and removes accounts (SIGHUP)

Every account has its own ingest, lease (:class:`~.lease.IngestLease`: a second process serving
the account stands by), reconnection backoff and writer queue (its events in its order); they
share the event log, one append task (:class:`~.writer.GroupCommit`: a publication fanned out to
many of them is a few transactions), the reconciliation probes (:class:`~.probes.ProbeBoard`:
that publication is one probe of its node, not one per account), the read-model directory and
a limit on logins in flight (:data:`LOGINS`), so that a restart of the server or of the daemon
brings no login storm. An account's failure (a wrong password at the first connection, a
removed account, an unexpected error) is logged, kept in :meth:`IngestPool.states` with its
reason, and never reaches the others (nor does a writer slot it holds: its queue is its own);
the account is tried again at the next :meth:`IngestPool.update` (SIGHUP) that still lists it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy.engine import Engine

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.events.log import EventLog

from .directory import NodeDirectory
from .ingest import Ingest, IngestOptions, XmppAccount
from .lease import IngestLease, new_owner, publish_states, sweep_states
from .probes import ProbeBoard
from .writer import RETRYABLE, GroupCommit

log = logging.getLogger(__name__)

#: Logins in flight at most (each a TCP, TLS and SASL exchange); the others wait their turn.
LOGINS = 8


@dataclass(frozen=True)
class AccountState:
    """Where an account's ingest stands: ``connecting``, ``connected``, ``standing-by``
    (another process holds its lease) or ``failed``, with the reason and since when (Unix)."""

    jid: str
    state: str
    reason: str | None
    since: float


class _Served:
    """One account's ingest and the scope that stops it."""

    def __init__(self, account: XmppAccount) -> None:
        self.account = account
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.ingest: Ingest


class IngestPool:
    """Serves a changing set of accounts; see the module docstring."""

    def __init__(
        self,
        engine: Engine | None,
        log: EventLog,
        directory: NodeDirectory,
        *,
        options: IngestOptions | None = None,
        logins: int = LOGINS,
        on_change: Callable[[AccountState], None] | None = None,
        reload: Callable[[], Sequence[XmppAccount]] | None = None,
        owner: str | None = None,
    ) -> None:
        self._reload = reload
        self._engine = engine  # None: no leases (tests of one process)
        self._log = log
        # One append task for every account: a publication fanned out to many accounts is a
        # few transactions, not one per account contending for the database.
        self.commit = GroupCommit(log)
        # One reconciliation probe per publication for all the accounts (see .probes).
        self.probes = ProbeBoard()
        self._directory = directory
        self._options = options or IngestOptions()
        self._logins = anyio.CapacityLimiter(logins)
        self._owner = owner or new_owner()  # in every lease and state row of this process
        self._on_change = on_change
        self._served: dict[str, _Served] = {}
        self._states: dict[str, AccountState] = {}
        self._changed = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None
        # States not yet in ingest_account (None: the account's row goes), and a wake-up.
        self._unpublished: dict[str, tuple[str, str | None, float] | None] = {}
        self._to_publish = anyio.Event()

    @property
    def ingests(self) -> dict[str, Ingest]:
        """The running ingest of each account, by bare JID."""
        return {jid: served.ingest for jid, served in self._served.items()}

    def states(self) -> list[AccountState]:
        """Every configured account's state, by JID."""
        return [self._states[jid] for jid in sorted(self._states)]

    async def run(
        self,
        accounts: Iterable[XmppAccount],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``accounts`` (then whatever :meth:`update` says) until cancelled."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                await group.start(self.commit.run)
                if self._engine is not None:
                    group.start_soon(self._publish, self._engine)
                self.update(accounts)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            if self._engine is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    stopped = {jid: ("stopped", None, time.time()) for jid in self._states}
                    self._unpublished.update(stopped)
                    await self._publish_once(self._engine)

    def update(self, accounts: Iterable[XmppAccount]) -> tuple[list[str], list[str]]:
        """Serve exactly ``accounts`` from now on: start the new ones, stop the ones gone, restart
        the changed and the failed ones; the others go on undisturbed. Returns the JIDs added
        and removed."""
        if self._group is None:
            raise RuntimeError("IngestPool.update before run")
        wanted = {account.jid: account for account in accounts}
        removed = [
            jid
            for jid, served in self._served.items()
            # Gone, changed, or failed (tried again): stopped, then started.
            if wanted.get(jid) != served.account or self._states[jid].state == "failed"
        ]
        stopping: dict[str, anyio.Event] = {}
        for jid in removed:
            served = self._served.pop(jid)
            served.scope.cancel()
            stopping[jid] = served.done
            if jid not in wanted:
                self._states.pop(jid, None)
                self._unpublished[jid] = None
                self._to_publish.set()
        added = [jid for jid in wanted if jid not in self._served]
        for jid in added:
            served = _Served(wanted[jid])
            served.ingest = self._ingest(served)
            self._served[jid] = served
            self._set(served, "connecting", None)
            # A changed account's old ingest releases its lease before the new one takes it.
            self._group.start_soon(self._serve, served, stopping.get(jid))
        self._notify()
        gone, new = set(removed) - set(wanted), set(added) - set(removed)
        if gone or new:
            log.info("accounts: %d served, %d added, %d removed", len(wanted), len(new), len(gone))
        return sorted(new), sorted(gone)

    async def reload(self) -> tuple[list[str], list[str]] | None:
        """Serve the accounts ``reload()`` lists now (read in a worker thread: it reads files);
        a bad configuration is logged and changes nothing. Returns what :meth:`update` does."""
        if self._reload is None:
            return None
        try:
            accounts = await anyio.to_thread.run_sync(self._reload)
        except PubsubCacheError as exc:
            log.error("accounts not reloaded, still serving the previous ones: %s", exc)
            return None
        return self.update(accounts)

    async def wait_until(self, check: Callable[[list[AccountState]], bool]) -> None:
        """Return once ``check(self.states())`` holds (checked at each change)."""
        while not check(self.states()):
            await self._changed.wait()

    def _ingest(self, served: _Served) -> Ingest:
        jid = served.account.jid
        lease = None if self._engine is None else IngestLease(self._engine, jid, self._owner)
        return Ingest(
            served.account,
            self._log,
            self._directory,
            options=self._options,
            lease=lease,
            on_state=functools.partial(self._set, served),
            logins=self._logins,
            writer=self.commit.writer(),
            probes=self.probes,
        )

    async def _serve(self, served: _Served, previous: anyio.Event | None) -> None:
        try:
            with served.scope:
                if previous is not None:
                    await previous.wait()
                try:
                    await served.ingest.run()
                except Exception as exc:  # one account's failure never reaches the others
                    reason = _reason(exc)
                    log.error(
                        "ingest failed: %s",
                        reason,
                        exc_info=exc,
                        extra={"account": served.account.jid},
                    )
                    self._set(served, "failed", reason)
        finally:
            with anyio.CancelScope(shield=True):
                await served.ingest.writer.close()  # (done already, unless it never ran)
            served.done.set()

    def _set(self, served: _Served, state: str, reason: str | None) -> None:
        jid = served.account.jid
        if self._served.get(jid) is not served:
            return  # stopped meanwhile (removed or replaced): its news is stale
        current = self._states.get(jid)
        if current is not None and (current.state, current.reason) == (state, reason):
            return
        self._states[jid] = change = AccountState(jid, state, reason, time.time())
        if state == "failed" or (current is not None and current.state == "connected"):
            log.warning(
                "account %s%s", state, f" ({reason})" if reason else "", extra={"account": jid}
            )
        self._unpublished[jid] = (state, reason, change.since)
        self._to_publish.set()
        if self._on_change is not None:
            self._on_change(change)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _publish(self, engine: Engine) -> None:
        # One writer of ingest_account for all the accounts: the changes of a login wave go in
        # one transaction; a database outage keeps the latest state of each until it is back.
        # First, the rows a dead daemon left (kill -9): status must not show them as served.
        try:
            swept = await anyio.to_thread.run_sync(sweep_states, engine, self._owner)
        except RETRYABLE as exc:
            log.warning("states left by dead daemons not cleared: %s", exc)
        else:
            if swept:
                log.info("cleared states left by dead daemons", extra={"accounts": swept})
        while True:
            await self._to_publish.wait()
            self._to_publish = anyio.Event()
            if not await self._publish_once(engine):
                await anyio.sleep(1.0)
                self._to_publish.set()

    async def _publish_once(self, engine: Engine) -> bool:
        batch, self._unpublished = self._unpublished, {}
        if not batch:
            return True
        try:
            await anyio.to_thread.run_sync(publish_states, engine, self._owner, batch)
        except RETRYABLE as exc:
            log.warning("account states not recorded (retrying): %s", exc)
            self._unpublished = {**batch, **self._unpublished}
            return False
        return True


def _reason(error: BaseException) -> str:
    # anyio wraps a task's exception in a group; the account's state shows the one inside.
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return str(error) or type(error).__name__
