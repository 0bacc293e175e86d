"""XEP-0059 windows over an ordered result set held in memory (live answers, sets by item id).

The cache computes the same windows in SQL (:mod:`.cache`); tests check that both agree on
random sets and requests. The rules, for a set of ``n`` items in order:

- no request, or no ``max``: every item from the starting point;
- ``max=0``: no items, only the count;
- ``after=X``: the ``max`` items following X; ``before=X``: the ``max`` items preceding X;
- ``before=""``: the last page; ``index=i``: the ``max`` items from position ``i``;
- X not in the set: :class:`RsmItemNotFound` (XEP-0059's ``item-not-found``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import RsmItemNotFound
from .model import PageItem, RsmRequest, RsmResult


def window_bounds(
    ids: Sequence[str], request: RsmRequest | None, *, service: str, node: str
) -> tuple[int, int]:
    """The slice ``[start, stop)`` of ``ids`` that ``request`` selects."""
    n = len(ids)
    if request is None:
        return 0, n
    size = request.max
    if size == 0:
        return 0, 0
    if request.before is not None:
        stop = (
            n if request.before == "" else _position(ids, request.before, "before", service, node)
        )
        return (0 if size is None else max(0, stop - size)), stop
    if request.after is not None:
        start = _position(ids, request.after, "after", service, node) + 1
    elif request.index is not None:
        start = min(request.index, n)
    else:
        start = 0
    return start, (n if size is None else min(n, start + size))


def window(
    items: Sequence[PageItem], request: RsmRequest | None, *, service: str, node: str
) -> tuple[list[PageItem], RsmResult]:
    """The page of ``items`` (the whole result set, in order) that ``request`` selects."""
    start, stop = window_bounds([item.id for item in items], request, service=service, node=node)
    page = list(items[start:stop])
    return page, result_for(page, start, len(items))


def result_for(page: Sequence[PageItem], index: int | None, count: int | None) -> RsmResult:
    """The ``<set/>`` answering with ``page``, whose first item is at ``index`` of the set."""
    if not page:
        return RsmResult(count=count)
    return RsmResult(first=page[0].id, last=page[-1].id, index=index, count=count)


def _position(ids: Sequence[str], item_id: str, cursor: str, service: str, node: str) -> int:
    try:
        return ids.index(item_id)
    except ValueError:
        raise RsmItemNotFound(service, node, item_id, cursor=cursor) from None
