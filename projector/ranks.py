"""Where each item stands in the orders the cache answers in: the place rules.

A cached answer must list items as the service would (invariant 10). XEP-0060 does not fix the
order of a result set, and servers differ (DESIGN.md, "What servers do"): ejabberd lists by
first publication (a re-published id keeps its place), Prosody by last publication (it moves
to the end). So every item carries three ranks, integers compared within its node:

- ``creation_rank``: the order of first publication *as the service reports it*;
- ``modification_rank``: the order of last publication;
- ``service_rank``: a copy of whichever of the two the node's service lists by
  (``pubsub_node.item_order``, learned by the ingest and logged with each ``SyncStarted``;
  creation when unknown). It is the default order of a cached answer, and the one
  ``max_items`` and RSM windows are cut from.

A rank is ``position * RANK_SPAN + index``. A notification places its items at its own
position, in the order it lists them: after everything logged before. A sync page places
its items at the position of its ``SyncStarted``, at their index in the whole listing
(``offset`` + index in the page): every item the listing names is re-placed by it, relative
to the others of the listing and *before* items first published after the sync started,
wherever their notifications landed in the log. That is what puts items pushed on presence
or published during a catch-up back in the service's place (tests/storage/test_item_order.py).

The listing re-places the rank of the order the service lists by; the other rank of an item
already known keeps what notifications taught (a new item takes the listing's place in both).
Every value comes from the log, so replay gives the same ranks as live (invariant 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pubsub_cache.events.types import ServiceOrder

#: Items one event may place: a listing longer than this shares its last rank (order within
#: that tail then falls back to row ids). Positions stay below 2**39 in a signed 64-bit rank.
RANK_SPAN = 1 << 24


def last_places(ids: Sequence[str]) -> list[int]:
    """The indexes of a listing that stand, each id once at its last place, in order.

    Prosody 0.12's memory store lists a re-published id twice: where it was, and at the end,
    where its last publication put it (its order is by last publication); the last is true.
    The projector, the live reads and the order learner all read a listing this way.
    """
    last = {item_id: index for index, item_id in enumerate(ids)}
    return sorted(last.values())


def rank(position: int, index: int) -> int:
    """The rank of the ``index``-th item placed by the event at ``position``."""
    return position * RANK_SPAN + min(index, RANK_SPAN - 1)


class Placement(NamedTuple):
    """Where an event puts one item: its rank, and the order it speaks for.

    ``listing`` is ``None`` for a publication (a notification, a fetched payload), else the
    order the sync listing is in.
    """

    rank: int
    listing: ServiceOrder | None


class Ranks(NamedTuple):
    """An item's three ranks."""

    creation: int
    modification: int
    service: int


def place(placement: Placement, known: tuple[int, int] | None, service_order: str | None) -> Ranks:
    """The ranks of an item placed by ``placement``; ``known`` is its (creation, modification)
    ranks when the cache already holds it, ``service_order`` the node's ``item_order``."""
    at = placement.rank
    if known is None:
        creation = modification = at
    elif placement.listing != "creation":  # (re)published, or listed by last publication
        creation, modification = known[0], at
    else:
        creation, modification = at, known[1]
    return Ranks(creation, modification, service_rank(creation, modification, service_order))


def service_rank(creation: int, modification: int, service_order: str | None) -> int:
    """The rank in the service's own order (creation order when it is not known)."""
    return modification if service_order == "modification" else creation
