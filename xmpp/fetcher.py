"""Payloads of notify-only items (a node configured without ``deliver_payloads``), fetched.

A notification may carry an item's id without its payload; the ingest logs that as it came
(``ItemsPublished`` with ``payload=None``) and then asks the service for the item, logging the
answer as another ``ItemsPublished`` with ``source="fetch"``. The answer takes its place in the
log the moment it arrives (a writer slot reserved in the receive path), so a retraction notified
just after it still comes after it.
"""

from __future__ import annotations

import logging
from collections import deque

import anyio

from pubsub_cache.events.types import ItemsPublished

from .directory import NodeRef
from .errors import XmppError
from .pubsub import PubsubClient
from .sync import Clock
from .writer import EventWriter, Slot

log = logging.getLogger(__name__)


class PayloadFetcher:
    """A queue of (node, item id) whose payloads to fetch, in notification order."""

    def __init__(self, writer: EventWriter, account: str, clock: Clock) -> None:
        self._writer = writer
        self._account = account
        self._clock = clock
        self._queue: deque[tuple[NodeRef, str]] = deque()
        self._added = anyio.Event()
        self.fetched = 0
        """Payloads fetched and logged so far."""

    @property
    def pending(self) -> int:
        """Items waiting for their payload (including the one being fetched)."""
        return len(self._queue)

    def add(self, ref: NodeRef, item_id: str) -> None:
        """Queue a fetch; never blocks (called from the notification handler)."""
        self._queue.append((ref, item_id))
        self._added.set()

    async def run(self, client: PubsubClient) -> None:
        """Fetch what is queued with ``client`` until cancelled; what is left when the
        session ends stays queued for the next one."""
        while True:
            while not self._queue:
                self._added = anyio.Event()
                await self._added.wait()
            ref, item_id = self._queue[0]
            await self._fetch(client, ref, item_id)
            self._queue.popleft()

    async def _fetch(self, client: PubsubClient, ref: NodeRef, item_id: str) -> None:
        slots: list[Slot] = []

        def arrived() -> None:
            slots.append(self._writer.reserve())

        try:
            item = await client.get_item(ref.service, ref.node, item_id, on_result=arrived)
        except XmppError as exc:
            log.warning("payload of notify-only item not fetched: %s", exc)
            return
        finally:
            for slot in slots[1:]:  # defensive: one reply, one slot
                self._writer.fill(slot, [])
        if not slots:
            return
        if item is None:  # retracted meanwhile: its retraction is (or will be) logged
            self._writer.fill(slots[0], [])
            return
        event = ItemsPublished(
            account=self._account,
            service=ref.service,
            node=ref.node,
            observed_at=self._clock(),
            source="fetch",
            items=[item],
        )
        self._writer.fill(slots[0], [event])
        self.fetched += 1
