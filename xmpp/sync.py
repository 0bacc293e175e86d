"""One synchronisation of one node: subscribe, fetch every item, and log it as sync events.

::

    SyncStarted(sync_id, order)          before the first request; how the service orders items
    NodeConfigured(source="fetch")       the node's configuration, when the account may read it
    SubscriptionChanged(source="fetch")  the state the service granted (pubsub services only)
    SyncPageFetched(sync_id, page=k,     one per reply, in its place among the notifications;
                    offset)              offset: how many items the earlier pages listed
    SyncCompleted(complete, reason)      complete only if the pager fetched every item
    | SyncFailed(error, condition)       (+ NodeDeleted when the service says the node is gone)

The projector turns a complete sync into COMPLETED and removes the items it did not see (unless
published after the SyncStarted); a partial one into PARTIAL with the pager's reason (invariant
6). PEP nodes (a service that is an account's bare JID) are not subscribed to: their
notifications come from the ``+notify`` interests announced with the presence.

The configuration (``max_items``, ``notify_retract``) is read with the owner's request: a
node's owner (an account's own PEP nodes, nodes it created) may read it, and then the
projector evicts beyond ``max_items`` by itself; anyone else is refused, cheaply, and the node
is kept right by reconciliation (:mod:`.reconcile`).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import msgspec

from pubsub_cache.events.types import (
    Item,
    NodeConfigured,
    NodeDeleted,
    ServiceOrder,
    SubscriptionChanged,
    SyncCompleted,
    SyncFailed,
    SyncPageFetched,
    SyncStarted,
)

from .errors import XmppError, XmppRequestError
from .pager import fetch_all
from .pubsub import PubsubClient, SubscriptionState
from .writer import EventWriter, Slot

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SyncState = Literal["COMPLETED", "PARTIAL", "ERROR", "DELETED"]

#: Conditions meaning the node does not exist (any more) on the service.
NODE_GONE = frozenset({"item-not-found"})


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """How one sync ended, as logged."""

    service: str
    node: str
    sync_id: str
    state: SyncState
    item_count: int = 0
    reason: str | None = None
    """Why PARTIAL or ERROR."""
    listed: list[str] = msgspec.field(default_factory=list)
    """The item ids the service listed, in its order (to learn that order, see ingest)."""

    @property
    def retry(self) -> bool:
        """Whether trying again later could help (an error, not a node that is gone)."""
        return self.state == "ERROR"


def is_pep(service: str) -> bool:
    """Whether ``service`` is an account's PEP service (a bare JID with a local part)."""
    return "@" in service


def utc_now() -> datetime:
    """The default clock: an aware UTC timestamp."""
    return datetime.now(UTC)


async def sync_node(
    client: PubsubClient,
    writer: EventWriter,
    service: str,
    node: str,
    *,
    page_size: int = 1000,
    limit: int | None = None,
    clock: Clock = utc_now,
    order: ServiceOrder | None = None,
) -> SyncResult:
    """Synchronise ``service``/``node`` for the client's account, logging through ``writer``.

    XMPP errors end the sync as a logged :class:`SyncFailed` and a result in state ERROR (or
    DELETED for a node the service no longer has); they are not raised. Cancellation logs a
    SyncFailed too, so that the node is not left IN_PROGRESS, and propagates. ``order`` is how
    the service orders the items it lists, when known (see :mod:`.disco`).
    """
    run = _Sync(client.jid, service, node, uuid.uuid4().hex, clock)
    writer.submit([run.started(order)])
    slots: deque[Slot] = deque()
    listed = 0
    ids: list[str] = []
    try:
        configuration = await _owner_configuration(client, service, node)
        if configuration is not None:
            writer.submit([run.configured(configuration)])
        if not is_pep(service):
            subscription = await client.subscribe(service, node)
            writer.submit([run.subscription(subscription)])
        fetch = fetch_all(
            client,
            service,
            node,
            page_size=page_size,
            limit=limit,
            on_reply=lambda: slots.append(writer.reserve()),
        )
        async for page in fetch:
            writer.fill(slots.popleft(), [run.page(page.items, page.index, listed)])
            listed += len(page.items)
            ids.extend(item.id for item in page.items)
        outcome = fetch.outcome
    except XmppError as exc:
        condition = exc.condition if isinstance(exc, XmppRequestError) else None
        gone = condition in NODE_GONE
        writer.submit([run.failed(str(exc), condition), *([run.deleted()] if gone else [])])
        log.warning(
            "sync failed: %s",
            exc,
            extra={
                "account": run.account,
                "service": service,
                "node": node,
                "sync_id": run.sync_id,
            },
        )
        return run.result("DELETED" if gone else "ERROR", reason=str(exc))
    except BaseException:
        writer.submit([run.failed("interrupted: the session ended or the ingest stopped", None)])
        raise
    finally:
        for slot in slots:  # replies whose page the pager refused or never yielded
            writer.fill(slot, [])
    writer.submit([run.completed(outcome.complete, outcome.item_count, outcome.reason)])
    state: SyncState = "COMPLETED" if outcome.complete else "PARTIAL"
    return run.result(state, item_count=outcome.item_count, reason=outcome.reason, listed=ids)


class _Sync(NamedTuple):
    """The events of one sync run."""

    account: str
    service: str
    node: str
    sync_id: str
    clock: Clock

    def started(self, order: ServiceOrder | None) -> SyncStarted:
        return SyncStarted(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            sync_id=self.sync_id,
            order=order,
        )

    def configured(self, form: dict[str, list[str]]) -> NodeConfigured:
        return NodeConfigured(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            source="fetch",
            form=form,
        )

    def subscription(self, state: SubscriptionState) -> SubscriptionChanged:
        return SubscriptionChanged(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            source="fetch",
            jid=self.account,
            subscription=state,
        )

    def page(self, items: list[Item], index: int, offset: int) -> SyncPageFetched:
        return SyncPageFetched(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            sync_id=self.sync_id,
            items=items,
            page=index,
            offset=offset,
        )

    def completed(self, complete: bool, item_count: int, reason: str | None) -> SyncCompleted:
        return SyncCompleted(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            sync_id=self.sync_id,
            complete=complete,
            item_count=item_count,
            reason=reason,
        )

    def failed(self, error: str, condition: str | None) -> SyncFailed:
        return SyncFailed(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            sync_id=self.sync_id,
            error=error,
            condition=condition,
        )

    def deleted(self) -> NodeDeleted:
        return NodeDeleted(
            account=self.account,
            service=self.service,
            node=self.node,
            observed_at=self.clock(),
            source="fetch",
        )

    def result(
        self,
        state: SyncState,
        *,
        item_count: int = 0,
        reason: str | None,
        listed: list[str] | None = None,
    ) -> SyncResult:
        return SyncResult(
            service=self.service,
            node=self.node,
            sync_id=self.sync_id,
            state=state,
            item_count=item_count,
            reason=reason,
            listed=listed or [],
        )


async def _owner_configuration(
    client: PubsubClient, service: str, node: str
) -> dict[str, list[str]] | None:
    """The node's configuration form when the account may read it (its owner), else ``None``.

    Only the fields the projector uses are kept: a form may carry the whole access list.
    """
    if is_pep(service) and service != client.jid:
        return None  # another account's PEP node: only its owner may ask
    try:
        form = await client.get_node_config(service, node)
    except XmppRequestError as exc:
        log.debug(
            "node configuration not readable: %s",
            exc,
            extra={"account": client.jid, "service": service, "node": node},
        )
        return None
    kept = {name: values for name, values in form.items() if name in CONFIGURATION_KEPT}
    return kept or None


#: Configuration fields the cache records (the projector reads the first two).
CONFIGURATION_KEPT = frozenset(
    {"pubsub#max_items", "pubsub#notify_retract", "pubsub#title", "pubsub#type"}
)
