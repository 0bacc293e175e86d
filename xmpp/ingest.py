"""The ingest: one account's XMPP session(s), everything they show appended to the event log.

::

    ingest = Ingest(account, EventLog(engine), ReadModelDirectory(engine, registry))
    await ingest.run()                      # until cancelled; reconnects by itself

Per session: connect (``+notify`` for the synced PEP nodes, then caps, then presence, with the
notification handler installed first), then re-read every synced node (notifications sent while
we were away are lost: headline messages are not stored), then serve sync requests, payload
fetches for notify-only items, reconciliations (:mod:`.reconcile`: what the service dropped
without a word) and a keepalive until the connection is lost. Then reconnect with backoff.
Each sync is told how the service orders items, learned once per service from its disco
identities (:mod:`.disco`). Every notification goes through one synchronous handler to one
ordered writer (:mod:`.writer`), so the log holds them in arrival order.

Given an :class:`~.lease.IngestLease` (the daemons give one), the ingest connects only while it
holds its account's lease: a second ingest of the account stands by (one warning naming the
holder) until the lease is released or expires, then takes over. A lease found taken over while
running (renewals failed for longer than the lease time, e.g. during a database outage that the
other process saw end first) ends the sessions, and the ingest stands by again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import anyio.to_thread

from pubsub_cache import telemetry
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.outage import Outage
from pubsub_cache.events.types import (
    ItemsPublished,
    NodeConfigured,
    NodeDeleted,
    NodeEvent,
    NotificationRejected,
    ServiceOrder,
)

from .backoff import Backoff
from .client import DEFAULT_PLUGINS, TlsMode, connect, disconnect
from .directory import NodeDirectory, NodeRef
from .disco import order_from_identities, order_from_listing
from .errors import XmppConnectError, XmppError
from .fetcher import PayloadFetcher
from .lease import DEFAULT_TTL, IngestLease
from .probes import ProbeBoard
from .pubsub import PubsubClient
from .reconcile import ReconcileOptions, Reconciler
from .scheduler import SyncScheduler
from .sync import Clock, SyncResult, sync_node, utc_now
from .translate import events_from_message, rejection_kind
from .writer import RETRYABLE, EventWriter

log = logging.getLogger(__name__)

#: Connection failures that retrying cannot mend (when they happen at the very first attempt:
#: later, a server being reconfigured under us is worth waiting for).
FATAL = ("authentication failed", "no acceptable SASL mechanism")


@dataclass(frozen=True, kw_only=True)
class XmppAccount:
    """How to open a session for the account whose view is cached."""

    jid: str
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    tls: TlsMode = "starttls"
    resource: str = "pubsub-cache"

    def full_jid(self) -> str:
        """The JID to bind: a per-process resource suffix, so two processes never collide."""
        return f"{self.jid}/{self.resource}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """Tuning of the ingest; the defaults suit a daemon, tests shorten the delays."""

    reconnect: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    sync_retry: Backoff = field(default_factory=lambda: Backoff(initial=5.0, cap=300.0))
    sync_concurrency: int = 4
    page_size: int = 1000
    """Items asked for per page. ejabberd 23.01 pays about the same per RSM page whatever its
    size (a 5k-item node: 9.7 s in pages of 100, 1.0 s in pages of 1000); Prosody ignores RSM,
    and a whole-node answer exactly this long counts as possibly capped (PARTIAL), which at
    1000, its memory store's default cap, is the truth."""
    sync_limit: int | None = 100_000
    """Items fetched at most per sync (beyond: PARTIAL): a service cannot page us forever."""
    request_poll: float = 2.0
    """Seconds between two looks for sync requests in the read model."""
    keepalive: float = 60.0
    request_timeout: float = 30.0
    connect_timeout: float = 20.0
    reconcile: ReconcileOptions = field(default_factory=ReconcileOptions)
    lease_ttl: float = DEFAULT_TTL
    """Seconds the account's lease lasts unless renewed (every third of it), when one is held."""


#: Told of each change of the session's state: ``connecting`` (with the last failure, if any),
#: ``connected``, ``standing-by`` (with the lease's holder).
StateCallback = Callable[[str, str | None], None]


class Ingest:
    """Runs the account's sessions and appends what they see; see the module docstring."""

    def __init__(
        self,
        account: XmppAccount,
        log: EventLog,
        directory: NodeDirectory,
        *,
        options: IngestOptions | None = None,
        writer: EventWriter | None = None,
        clock: Clock = utc_now,
        lease: IngestLease | None = None,
        on_state: StateCallback | None = None,
        logins: anyio.CapacityLimiter | None = None,
        probes: ProbeBoard | None = None,
    ) -> None:
        self.account = account
        self.lease = lease
        self._on_state = on_state
        self._logins = logins  # shared by the accounts of one process: no login storm
        self.options = options or IngestOptions()
        self.writer = writer or EventWriter(log)
        self.scheduler = SyncScheduler(
            concurrency=self.options.sync_concurrency, retry=self.options.sync_retry
        )
        self._directory = directory
        self._clock = clock
        self._wanted: set[NodeRef] = set()  # nodes to keep synced, known to this process
        self._unwanted: set[NodeRef] = set()  # nodes whose analyser said no, on a payload
        self._handled_requests: dict[NodeRef, int] = {}
        self.fetcher = PayloadFetcher(self.writer, account.jid, clock)
        self.reconciler = Reconciler(
            account.jid,
            self.writer,
            directory,
            clock,
            lambda ref, reason: self.request_sync(ref.service, ref.node, reason),
            self.scheduler.syncing,
            self.options.reconcile,
            # Shared by the accounts of one process (the pool's): one probe per publication.
            board=probes if probes is not None else ProbeBoard(),
        )
        self._orders: dict[str, ServiceOrder | None] = {}
        self.sessions = 0
        """Sessions opened so far."""
        self.notifications = 0
        """Notification messages handled so far."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, ingest, reconnect, until cancelled; ``started`` once the first session is up.

        Raises :class:`XmppConnectError` when the very first attempt fails to authenticate (a
        wrong password is not worth retrying, see :data:`FATAL`); other failures are retried
        with backoff. With a lease, stands by until it holds it (see the module docstring).
        """
        try:
            async with anyio.create_task_group() as group:
                if not self.writer.shared:  # a shared one is run by its group (the pool's)
                    await group.start(self.writer.run)
                if self.lease is None:
                    await self._sessions(task_status)
                else:
                    await self._leased_sessions(self.lease, _StartedOnce(task_status))
        finally:
            with anyio.CancelScope(shield=True):
                # What the sessions' clean-up submitted last. A shared writer (the pool's) is
                # this account's queue only: flushed and left, the others' go on.
                await self.writer.close()
                if self.lease is not None:
                    # After the writer: the next holder starts after our last append.
                    await self._release(self.lease)

    async def _leased_sessions(self, lease: IngestLease, task_status: _StartedOnce) -> None:
        while True:
            await self._stand_by(lease)
            async with anyio.create_task_group() as held:
                held.start_soon(self._renew, lease, held.cancel_scope)
                await self._sessions(task_status)

    async def _stand_by(self, lease: IngestLease) -> None:
        ttl = self.options.lease_ttl
        outage = Outage("ingest lease", log, delay=lambda _attempt: ttl / 3)
        waited = None
        while True:
            try:
                holder = await anyio.to_thread.run_sync(functools.partial(lease.take, ttl=ttl))
            except RETRYABLE as exc:
                await anyio.sleep(outage.failed(exc))
                continue
            outage.ended()
            if holder is None:
                self._state("connecting", None)
                if waited is not None:
                    log.warning(
                        "took over the ingest", extra={"account": self.account.jid, "owner": waited}
                    )
                return
            if waited != holder.owner:
                log.warning(
                    "the account is ingested by another process: standing by until its lease "
                    "is released or expires (in %.0f s)",
                    max(0.0, holder.expires_in),
                    extra={"account": self.account.jid, "owner": holder.owner},
                )
                waited = holder.owner
                self._state("standing-by", f"ingested by {holder.owner}")
            await anyio.sleep(min(ttl / 3, max(0.01, holder.expires_in)))

    async def _renew(self, lease: IngestLease, held: anyio.CancelScope) -> None:
        # A database outage does not stop the ingest (its writer buffers meanwhile); only a
        # lease found in another's hands does.
        ttl = self.options.lease_ttl
        outage = Outage("ingest lease renewal", log, delay=lambda _attempt: ttl / 3)
        while True:
            await anyio.sleep(ttl / 3)
            try:
                holder = await anyio.to_thread.run_sync(functools.partial(lease.take, ttl=ttl))
            except RETRYABLE as exc:
                outage.failed(exc)
                continue
            outage.ended()
            if holder is not None:
                log.error(
                    "the ingest was taken over by another process: ending the sessions, "
                    "standing by",
                    extra={"account": self.account.jid, "owner": holder.owner},
                )
                held.cancel()
                return

    async def _release(self, lease: IngestLease) -> None:
        try:
            with anyio.move_on_after(5):
                await anyio.to_thread.run_sync(lease.release, abandon_on_cancel=True)
        except RETRYABLE as exc:
            log.warning(
                "could not release the ingest lease: %s", exc, extra={"account": self.account.jid}
            )

    async def wait_idle(self) -> None:
        """Return once no sync or payload fetch is queued or running and the log has it all."""
        while self.scheduler.busy or self.fetcher.pending or self.reconciler.pending:
            await self.scheduler.wait_idle()
            await anyio.sleep(0.01)
        await self.writer.flush()

    def _state(self, state: str, reason: str | None) -> None:
        if self._on_state is not None:
            self._on_state(state, reason)

    async def _sessions(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        failures = 0
        while True:
            lost = anyio.Event()
            try:
                async with self._logins or contextlib.nullcontext():
                    xmpp = await connect(
                        self.account.full_jid(),
                        self.account.password,
                        host=self.account.host,
                        port=self.account.port,
                        tls=self.account.tls,
                        timeout=self.options.connect_timeout,
                        plugins=DEFAULT_PLUGINS,
                        pep_notify=self._directory.pep_notify(),
                        on_notification=self.handle_message,
                        on_disconnected=lost.set,
                    )
            except XmppConnectError as exc:
                if self.sessions == 0 and failures == 0 and exc.cause.startswith(FATAL):
                    raise
                self._state("connecting", str(exc))
                failures += 1
                delay = self.options.reconnect.delay(failures)
                # WARNING each time, with when the next attempt is: a host that does not
                # resolve must show, not be retried in silence.
                log.warning(
                    "XMPP session not opened: %s; next attempt in %.3g s",
                    exc.cause,
                    delay,
                    extra={
                        "account": self.account.jid,
                        "host": exc.host,
                        "port": exc.port,
                        "attempt": failures,
                        "next_attempt_in": delay,
                    },
                )
                telemetry.current().reconnecting(self.account.jid)
                await anyio.sleep(delay)
                continue
            failures = 0
            self.sessions += 1
            self._state("connected", None)
            log.info(
                "session started", extra={"account": self.account.jid, "session": self.sessions}
            )
            try:
                await self.serve_session(
                    PubsubClient(xmpp, timeout=self.options.request_timeout), lost, task_status
                )
            finally:
                await disconnect(xmpp)
            task_status = anyio.TASK_STATUS_IGNORED  # started() is called once
            self._state("connecting", "session lost")
            delay = self.options.reconnect.delay(1)
            log.warning(
                "session lost; next attempt in %.3g s",
                delay,
                extra={"account": self.account.jid, "next_attempt_in": delay},
            )
            telemetry.current().reconnecting(self.account.jid)
            await anyio.sleep(delay)

    async def serve_session(
        self, client: PubsubClient, lost: anyio.Event, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Serve one open session (syncs, catch-up, payload fetches, reconciliation, keepalive)
        until ``lost`` is set; the daemon calls it for the sessions it opens, the slixmpp plugin
        for the program's own."""
        async with anyio.create_task_group() as group:
            await group.start(self.scheduler.run, functools.partial(self._sync, client))
            group.start_soon(self._watch_read_model)
            group.start_soon(self.fetcher.run, client)
            group.start_soon(self.reconciler.run, client, lambda: sorted(self._wanted))
            group.start_soon(self._keepalive, client, lost)
            task_status.started()
            await lost.wait()
            group.cancel_scope.cancel()

    async def _sync(self, client: PubsubClient, ref: NodeRef) -> SyncResult:
        order = await self._service_order(client, ref.service)
        known: tuple[list[str], list[str]] | None = None
        if order is None:  # what the cache saw published may show the service's order
            with contextlib.suppress(*RETRYABLE):
                known = await anyio.to_thread.run_sync(
                    self._directory.item_orders, self.account.jid, ref
                )
        result = await sync_node(
            client,
            self.writer,
            ref.service,
            ref.node,
            page_size=self.options.page_size,
            limit=self.options.sync_limit,
            clock=self._clock,
            order=order,
        )
        if known is not None and result.listed:
            self._learn_order(ref, order_from_listing(result.listed, *known))
        if result.state == "DELETED":
            self._wanted.discard(ref)
        telemetry.current().synced(result.state)
        log.info(
            "sync finished: %s%s",
            result.state,
            f" ({result.reason})" if result.reason else "",
            extra={
                "account": self.account.jid,
                "service": ref.service,
                "node": ref.node,
                "sync_id": result.sync_id,
                "items": result.item_count,
            },
        )
        return result

    async def _service_order(self, client: PubsubClient, service: str) -> ServiceOrder | None:
        # The service's own identity first (a pubsub component names its software), then its
        # server's (an account's PEP service does not answer strangers' disco#info).
        if service in self._orders:
            return self._orders[service]
        host = service.rpartition("@")[2]
        candidates = [service] if host == service else []
        candidates += [host, *([host.partition(".")[2]] if "." in host else [])]
        software, order = None, None
        for jid in dict.fromkeys(candidates):
            try:
                software, order = order_from_identities(await client.identities(jid))
            except XmppError as exc:
                log.debug("disco#info failed: %s", exc, extra={"jid": jid})
                continue
            if order is not None:
                break
        log.info(
            "service identified: %s, items in %s order",
            software or "unknown software",
            order or "unknown (creation assumed)",
            extra={"service": service},
        )
        self._orders[service] = order
        return order

    def _learn_order(self, ref: NodeRef, order: ServiceOrder | None) -> None:
        # A service whose software is unknown shows its order once an item the cache saw
        # re-published is listed: before the others (creation) or after them (modification).
        if order is None or self._orders.get(ref.service) is not None:
            return
        self._orders[ref.service] = order
        log.info(
            "the service lists items in %s order (learned from a listing)",
            order,
            extra={"service": ref.service, "node": ref.node},
        )
        self.request_sync(ref.service, ref.node, f"the service's order is {order}")

    def request_sync(self, service: str, node: str, reason: str) -> None:
        """Sync ``service``/``node`` now, and again after every reconnection."""
        ref = NodeRef(service, node)
        self._wanted.add(ref)
        self.scheduler.request(ref, reason)

    async def _watch_read_model(self) -> None:
        # The read model says what to catch up after connecting, and which syncs were requested
        # (SyncRequested events, projected as sync_requested_position: requests made while we
        # were down wait there too). A database that is away is waited for; the nodes this
        # process knows are caught up meanwhile.
        for ref in sorted(self._wanted):
            self.scheduler.request(ref, "catch-up after connecting")
        caught_up = False
        outage = Outage("sync requests", log, delay=lambda _attempt: self.options.request_poll)
        while True:
            try:
                if not caught_up:
                    await self._catch_up()
                    caught_up = True
                await self._poll_requests()
            except RETRYABLE as exc:
                outage.failed(exc)
            else:
                outage.ended()
            await anyio.sleep(self.options.request_poll)

    async def _catch_up(self) -> None:
        stored = await anyio.to_thread.run_sync(self._directory.nodes_to_resync, self.account.jid)
        for ref in stored:
            if ref not in self._wanted:
                self._wanted.add(ref)
                self.scheduler.request(ref, "catch-up after connecting")
        log.info(
            "catching up the synced nodes",
            extra={"account": self.account.jid, "nodes": len(self._wanted)},
        )

    async def _poll_requests(self) -> None:
        requests = await anyio.to_thread.run_sync(self._directory.sync_requests, self.account.jid)
        for ref, position in requests:
            if self._handled_requests.get(ref) != position:
                self._handled_requests[ref] = position
                self.request_sync(ref.service, ref.node, f"requested at position {position}")

    async def _keepalive(self, client: PubsubClient, lost: anyio.Event) -> None:
        # A server that vanished without closing the TCP connection is only noticed by asking.
        while True:
            await anyio.sleep(self.options.keepalive)
            try:
                await client.ping(timeout=min(30.0, self.options.keepalive))
            except XmppError as exc:
                log.warning(
                    "keepalive failed, ending the session: %s",
                    exc,
                    extra={"account": self.account.jid},
                )
                lost.set()
                return

    def handle_message(self, message: ET.Element) -> None:
        """Log a pubsub notification (a ``<message>`` with a pubsub event) of the session."""
        # Runs inside slixmpp's receive path, in arrival order: queue, never wait, never raise
        # (slixmpp would only log it, and the rest of the message would be lost).
        try:
            events = events_from_message(
                message, account=self.account.jid, observed_at=self._clock()
            )
            self.notifications += 1
            self.writer.submit(events)
            refused = [
                rejection_kind(e.reason) for e in events if isinstance(e, NotificationRejected)
            ]
            telemetry.current().notified(len(events) - len(refused), refused)
            for event in events:
                self._observe(event)
        except Exception:
            log.exception(
                "notification not ingested",
                extra={
                    "account": self.account.jid,
                    "stanza": ET.tostring(message, "unicode")[:2000],
                },
            )

    def _observe(self, event: NodeEvent) -> None:
        ref = NodeRef(event.service, event.node)
        if isinstance(event, NodeConfigured) and ref in self._wanted:
            self.reconciler.after_configuration(ref)
        if isinstance(event, NodeDeleted):
            self._wanted.discard(ref)
            self._unwanted.discard(ref)
            self.scheduler.forget(ref)
        elif isinstance(event, ItemsPublished):
            for item in event.items:
                if item.payload is None:
                    self.fetcher.add(ref, item.id)
            if ref in self._wanted:
                self.reconciler.after_publish(ref)
            if ref not in self._wanted and ref not in self._unwanted:
                # Analysed once per node (parsing a payload is not free), or until a payload
                # shows the namespace when the first notifications carried none.
                sample = next((i.payload for i in event.items if i.payload is not None), None)
                if self._directory.wants_sync(ref.service, ref.node, sample):
                    self.request_sync(ref.service, ref.node, "first seen in a notification")
                elif sample is not None:
                    self._unwanted.add(ref)


class _StartedOnce(anyio.abc.TaskStatus[None]):
    """Passes the first ``started()`` on, ignores the others (sessions start again after a
    lease is lost and taken back)."""

    def __init__(self, status: anyio.abc.TaskStatus[None]) -> None:
        self._status: anyio.abc.TaskStatus[None] | None = status

    def started(self, value: None = None) -> None:
        if self._status is not None:
            status, self._status = self._status, None
            status.started(value)
