"""Reconciliation: a cheap check that the cache holds the items the service holds.

Servers drop items beyond ``max_items`` without telling subscribers (Prosody always; ejabberd
unless ``notify_retract`` is on), and a subscriber may not read the node's configuration to
know the limit. So the ingest asks for the node's item ids without payloads (disco#items on
the node, XEP-0060 §5.5) and compares them with the read model:

- after a publication notification on a synced node whose limit the cache does not know from
  its configuration (the publication may have evicted something), once per burst. This one
  starts with a probe: a server evicts the oldest items first, so when the few oldest items
  the cache holds are still there (one ``<items>`` request naming them), nothing was evicted
  and the listing is skipped. A 10k-item node's listing costs Prosody about as much as its
  items (``pubsub-cache bench reconcile``); the probe costs a few items. The accounts of one
  process share their probes (:mod:`.probes`): a publication notified to 200 of them is one
  probe, not 200;
- after a configuration notification (Prosody evicts at once when ``max_items`` is lowered);
- periodically for every synced node.

The listing is logged as :class:`~pubsub_cache.events.types.ItemsListed` *in the place of the
service's reply* among the notifications (a writer slot reserved when the reply arrives), so
the projector compares it with exactly what the account had seen then: items the service no
longer lists are evicted, ids the cache lacks make it request a sync (which fetches them with
their places). Nothing is logged when the listing already equals the read model.

After a reconnection the catch-up is a full sync, not a reconciliation: ids alone cannot show
an item re-published with the same id while we were away.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from pubsub_cache.events.limits import MAX_TEXT
from pubsub_cache.events.outage import UNAVAILABLE, Outage, exponential
from pubsub_cache.events.types import ItemsListed

from .directory import NodeDirectory, NodeRef
from .errors import XmppError, XmppRequestError
from .probes import ProbeBoard
from .pubsub import PubsubClient
from .sync import Clock
from .writer import EventWriter, Slot

log = logging.getLogger(__name__)

#: Errors saying the service will not list the node's ids to us (a contact's PEP without
#: presence subscription on Prosody, a service without the feature): the node is re-read by a
#: sync instead, at most every ``fallback_interval``.
UNLISTABLE = frozenset(
    {"feature-not-implemented", "service-unavailable", "not-allowed", "forbidden"}
)


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions:
    """When reconciliations run; the defaults suit a daemon, tests shorten them."""

    after_publish: float = 1.0
    """Seconds after a publication before its node is checked (a burst is checked once)."""
    interval: float = 900.0
    """Seconds between two periodic checks of each synced node."""
    spacing: float = 0.2
    """Seconds at least between two checks, whatever triggered them: a bound on the rate."""
    fallback_interval: float = 300.0
    """Seconds at least between two syncs of a node the service will not list."""
    timeout: float = 30.0
    probe: int = 4
    """How many of the oldest cached items the probe after a publication asks for."""


@dataclass
class ReconcileStats:
    """What the reconciler did so far."""

    checks: int = 0
    probes: int = 0
    """Checks after a publication that a probe settled without a listing."""
    probes_shared: int = 0
    """Of those, the probes answered by another account's request (:mod:`.probes`)."""
    differences: int = 0
    failures: int = 0
    fallbacks: int = 0


@dataclass
class Reconciler:
    """Schedules and runs reconciliations for one account's session (see the module docstring).

    ``after_publish`` and ``after_configuration`` are called from the notification handler:
    they only record a due time. :meth:`run` carries checks out while the session lives.
    """

    account: str
    writer: EventWriter
    directory: NodeDirectory
    clock: Clock
    request_sync: Callable[[NodeRef, str], None]
    syncing: Callable[[NodeRef], bool]
    """Whether a sync of the node is on its way: it will set the node right, check later."""
    options: ReconcileOptions = field(default_factory=ReconcileOptions)
    stats: ReconcileStats = field(default_factory=ReconcileStats)
    board: ProbeBoard = field(default_factory=ProbeBoard)
    """Probe results, shared by the accounts of a process (one account's own otherwise)."""
    _due: dict[NodeRef, tuple[float, str]] = field(default_factory=dict)
    _triggers: dict[NodeRef, float] = field(default_factory=dict)
    """When the last publication notified on each node with a check due was handled."""
    _fallback_at: dict[NodeRef, float] = field(default_factory=dict)
    _wake: anyio.Event = field(default_factory=anyio.Event)
    _running: int = 0
    _outage: Outage = field(
        default_factory=lambda: Outage("reconciliation", log, delay=exponential(0.5, 30.0))
    )

    def after_publish(self, ref: NodeRef) -> None:
        """A publication was notified on a synced node."""
        self._triggers[ref] = time.monotonic()
        self._schedule(ref, self.options.after_publish, "publish")

    def after_configuration(self, ref: NodeRef) -> None:
        """The node's configuration changed."""
        self._schedule(ref, self.options.after_publish, "configuration")

    def request(self, ref: NodeRef) -> None:
        """Check ``ref`` now (an operator's or a test's request)."""
        self._schedule(ref, 0.0, "request")

    def periodic(self, refs: list[NodeRef]) -> None:
        """Check each of ``refs``, spread over the interval (see :meth:`run`)."""
        if not refs:
            return
        step = self.options.interval / len(refs)
        for index, ref in enumerate(refs):
            self._schedule(ref, step * index, "periodic")

    @property
    def pending(self) -> int:
        """Checks scheduled by an event (not the periodic round) or running."""
        return sum(why != "periodic" for _at, why in self._due.values()) + self._running

    async def run(self, client: PubsubClient, wanted: Callable[[], list[NodeRef]]) -> None:
        """Carry out due checks until cancelled; schedule a periodic round every interval."""
        next_round = time.monotonic() + self.options.interval
        while True:
            now = time.monotonic()
            if now >= next_round:
                self.periodic(wanted())
                next_round = now + self.options.interval
            due = [(at, ref) for ref, (at, _why) in self._due.items() if at <= now]
            if not due:
                wake_at = min([at for at, _ in self._due.values()] + [next_round])
                with anyio.move_on_after(max(0.0, wake_at - now)):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            _at, ref = min(due)
            _when, why = self._due.pop(ref)
            if self.syncing(ref):
                self._schedule(ref, max(self.options.after_publish, 0.05), why)
                continue
            trigger = self._triggers.pop(ref, None)
            self._running += 1
            try:
                await self.check(client, ref, why, trigger=trigger)
            finally:
                self._running -= 1
            await anyio.sleep(self.options.spacing)

    async def check(
        self,
        client: PubsubClient,
        ref: NodeRef,
        why: str = "request",
        *,
        trigger: float | None = None,
    ) -> bool:
        """Compare the node's ids at the service with the read model; log the listing when
        they differ. Returns whether a listing was logged. ``trigger``: when the notification
        that asked for the check was handled (:func:`time.monotonic`; by default, now): a
        probe sent before it tells nothing of it."""
        trigger = time.monotonic() if trigger is None else trigger
        slots: list[Slot] = []
        event: ItemsListed | None = None
        try:
            if why == "publish":
                limits = await anyio.to_thread.run_sync(
                    self.directory.node_limits, self.account, ref
                )
                if limits is not None and limits.max_items is not None:
                    return False  # the projector evicts by the configured limit itself
                if await self._oldest_still_there(client, ref, trigger):
                    self.stats.probes += 1
                    return False
            self.stats.checks += 1
            ids, complete = await self._list(client, ref, slots)
            cached = await anyio.to_thread.run_sync(
                self.directory.cached_item_ids, self.account, ref
            )
            if cached is None or set(ids) != cached:
                event = ItemsListed(
                    account=self.account,
                    service=ref.service,
                    node=ref.node,
                    observed_at=self.clock(),
                    item_ids=list(dict.fromkeys(ids)),
                    complete=complete,
                )
                self.stats.differences += 1
                log.info(
                    "reconciling a node (%s): the service lists %d items, the cache holds %s",
                    why,
                    len(ids),
                    "none" if cached is None else len(cached),
                    extra={"account": self.account, "service": ref.service, "node": ref.node},
                )
        except XmppRequestError as exc:
            self.stats.failures += 1
            if exc.condition in UNLISTABLE:
                self._fall_back(ref, str(exc))
            else:
                log.warning(
                    "reconciliation failed: %s",
                    exc,
                    extra={"account": self.account, "service": ref.service, "node": ref.node},
                )
        except UNAVAILABLE as exc:
            # The read model is away: check again once it is back (the listing is dropped).
            self.stats.failures += 1
            self._schedule(ref, self._outage.failed(exc), why)
        except XmppError as exc:
            self.stats.failures += 1
            log.warning(
                "reconciliation failed: %s",
                exc,
                extra={"account": self.account, "service": ref.service, "node": ref.node},
            )
        else:
            self._outage.ended()
        finally:
            for slot in slots[:-1]:
                self.writer.fill(slot, [])
            if slots:
                self.writer.fill(slots[-1], [event] if event is not None else [])
        return event is not None

    async def _oldest_still_there(self, client: PubsubClient, ref: NodeRef, trigger: float) -> bool:
        oldest = await anyio.to_thread.run_sync(
            self.directory.oldest_item_ids, self.account, ref, self.options.probe
        )
        if not oldest:
            return False  # nothing cached to probe with: list

        async def send() -> list[str]:
            found = await client.get_items_by_id(
                ref.service, ref.node, oldest, timeout=self.options.timeout
            )
            return [item.id for item in found]

        answer = await self.board.probe(ref, oldest, trigger=trigger, send=send)
        if answer.shared:
            self.stats.probes_shared += 1
        return answer.there

    async def _list(
        self, client: PubsubClient, ref: NodeRef, slots: list[Slot]
    ) -> tuple[list[str], bool]:
        # Each reply keeps its place in the writer's queue (see ItemsListed): only the last
        # one's slot receives the listing.
        ids: list[str] = []
        refused = False
        after: str | None = None
        for _ in range(10_000):
            page = await client.item_ids(
                ref.service,
                ref.node,
                after=after,
                timeout=self.options.timeout,
                on_result=lambda: slots.append(self.writer.reserve()),
            )
            for item_id in page.ids:
                if 0 < len(item_id) <= MAX_TEXT:
                    ids.append(item_id)
                else:  # never cached (see stanzas.reply_items): a listing without it is partial
                    refused = True
            rsm = page.rsm
            if rsm is None or not page.ids or (rsm.count is not None and len(ids) >= rsm.count):
                return ids, not refused
            if rsm.last is None or rsm.last == after:
                return ids, False  # cannot ask for what follows: remove nothing
            after = rsm.last
        return ids, False

    def _fall_back(self, ref: NodeRef, reason: str) -> None:
        now = time.monotonic()
        last = self._fallback_at.get(ref, -math.inf)
        if now - last < self.options.fallback_interval:
            return
        self._fallback_at[ref] = now
        self.stats.fallbacks += 1
        log.info(
            "the node cannot be listed (%s): syncing it",
            reason,
            extra={"account": self.account, "service": ref.service, "node": ref.node},
        )
        self.request_sync(ref, f"reconciliation by sync: {reason}")

    def _schedule(self, ref: NodeRef, delay: float, why: str) -> None:
        # One check per node at a time: the earliest due time, and the reason that checks
        # most (a publish check is skipped when the limit is known, the others never are).
        at = time.monotonic() + delay
        current = self._due.get(ref)
        if current is not None:
            at = min(at, current[0])
            why = why if current[1] == "publish" else current[1]
        self._due[ref] = (at, why)
        self._wake.set()
