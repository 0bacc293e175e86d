"""The query library client programs import: cached reads, search, live fallback.

The read side is deliberately dumb: a view is a query over the tables the projector owns
(``pubsub_node``, ``pubsub_item``), per account. Nothing is built at import time: open a
:class:`Query` (async, anyio on asyncio) or a :class:`BlockingQuery` with a database URL or
engine, and optionally the program's own XMPP session for live reads.
"""

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
