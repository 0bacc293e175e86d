"""The query library client programs import: cached reads, search, live fallback.

The read side is deliberately dumb: a view is a query over the tables the projector owns
(``pubsub_node``, ``pubsub_item``), per account. Nothing is built at import time: open a
:class:`Query` (async, anyio on asyncio) or a :class:`BlockingQuery` with a database URL or
engine, and optionally the program's own XMPP session for live reads.

Each name is imported from its module when it is first asked for (PEP 562), so that a program
pays only for what it uses: ``from pubsub_cache.query import Query`` does not load the blocking
facade and its thread portal, nor ``Filter`` the search. A cached ``pubsub-cache get`` lives on
that (``pubsub-cache bench cli``; tests/cli/test_startup.py lists what it must not import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Query
    from .blocking import BlockingQuery
    from .errors import (
        InvalidFilterValue,
        InvalidOperator,
        InvalidOrder,
        InvalidPath,
        InvalidQuery,
        InvalidRsm,
        LiveFetchError,
        LiveFetchTimeout,
        NotCached,
        ProjectionTimeout,
        QueryError,
        RsmItemNotFound,
    )
    from .filters import OPERATORS, Filter
    from .model import (
        ORDERS,
        NodeState,
        Order,
        Page,
        PageItem,
        RsmRequest,
        RsmResult,
        SearchHit,
        SearchResult,
    )
    from .watch import Change

#: Each public name and the module of this package that defines it.
_HOMES = {
    "Query": "api",
    "BlockingQuery": "blocking",
    "OPERATORS": "filters",
    "Filter": "filters",
    "Change": "watch",
    **dict.fromkeys(
        (
            "InvalidFilterValue",
            "InvalidOperator",
            "InvalidOrder",
            "InvalidPath",
            "InvalidQuery",
            "InvalidRsm",
            "LiveFetchError",
            "LiveFetchTimeout",
            "NotCached",
            "ProjectionTimeout",
            "QueryError",
            "RsmItemNotFound",
        ),
        "errors",
    ),
    **dict.fromkeys(
        (
            "ORDERS",
            "NodeState",
            "Order",
            "Page",
            "PageItem",
            "RsmRequest",
            "RsmResult",
            "SearchHit",
            "SearchResult",
        ),
        "model",
    ),
}

__all__ = [
    "OPERATORS",
    "ORDERS",
    "BlockingQuery",
    "Change",
    "Filter",
    "InvalidFilterValue",
    "InvalidOperator",
    "InvalidOrder",
    "InvalidPath",
    "InvalidQuery",
    "InvalidRsm",
    "LiveFetchError",
    "LiveFetchTimeout",
    "NodeState",
    "NotCached",
    "Order",
    "Page",
    "PageItem",
    "ProjectionTimeout",
    "Query",
    "QueryError",
    "RsmItemNotFound",
    "RsmRequest",
    "RsmResult",
    "SearchHit",
    "SearchResult",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # asked once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
