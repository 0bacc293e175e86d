"""Errors of the query library, named by condition; each builds its own one-line message."""

from __future__ import annotations

from pubsub_cache.errors import PubsubCacheError


def _on(service: str, node: str) -> str:
    return f"node {node!r} of {service}"


class QueryError(PubsubCacheError):
    """Raised for any condition the query library detects; catch this for "the read failed"."""


class InvalidQuery(QueryError, ValueError):
    """Raised when a request is malformed: a bad RSM set, order, path, operator or value."""


class NotCached(QueryError):
    """Raised when a node is not synced in the cache and no live session can read it."""

    def __init__(
        self, account: str, service: str, node: str, *, reason: str, sync_requested: bool = False
    ) -> None:
        self.account = account
        self.service = service
        self.node = node
        self.reason = reason
        self.sync_requested = sync_requested
        then = "; a sync was requested" if sync_requested else ""
        super().__init__(
            f"{_on(service, node)} is not cached for {account} ({reason}) "
            f"and there is no live session to read it{then}"
        )


class LiveFetchTimeout(QueryError):
    """Raised when a live read of a node gets no answer within its timeout."""

    def __init__(self, service: str, node: str, *, seconds: float) -> None:
        self.service = service
        self.node = node
        self.seconds = seconds
        super().__init__(f"live read of {_on(service, node)}: no answer within {seconds:g} s")


class LiveFetchError(QueryError):
    """Raised when a live read of a node fails; ``condition`` is the XMPP error condition
    (``item-not-found``, ``forbidden``, ...), or ``None`` for an unusable or lost answer."""

    def __init__(self, service: str, node: str, *, condition: str | None, detail: str) -> None:
        self.service = service
        self.node = node
        self.condition = condition
        self.detail = detail
        what = condition or "no usable answer"
        super().__init__(f"live read of {_on(service, node)} failed: {what}: {detail}")


class RsmItemNotFound(InvalidQuery):
    """Raised when an RSM ``after`` or ``before`` names an item that is not in the result set
    (XEP-0059: ``item-not-found``)."""

    def __init__(self, service: str, node: str, item_id: str, *, cursor: str) -> None:
        self.service = service
        self.node = node
        self.item_id = item_id
        self.cursor = cursor
        super().__init__(
            f"RSM {cursor}: item {item_id!r} is not in the result set of {_on(service, node)}"
        )


class InvalidRsm(InvalidQuery):
    """Raised when an RSM request breaks XEP-0059 (negative max, both after and before...)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid RSM request: {reason}")


class InvalidOrder(InvalidQuery):
    """Raised when an order is neither a named order nor a valid parsed path."""

    def __init__(self, order: str, reason: str) -> None:
        self.order = order
        super().__init__(f"invalid order {order!r}: {reason}")


class InvalidPath(InvalidQuery):
    """Raised when a parsed-JSON path does not follow the path grammar (``author.name``,
    ``tags``, ``links[0].href``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"invalid path {path!r}: {reason}")


class InvalidOperator(InvalidQuery):
    """Raised when a filter names an operator the search does not know."""

    def __init__(self, path: str, operator: str, known: tuple[str, ...]) -> None:
        self.path = path
        self.operator = operator
        super().__init__(
            f"filter {path}: unknown operator {operator!r}; expected one of {', '.join(known)}"
        )


class InvalidFilterValue(InvalidQuery):
    """Raised when a filter's value does not suit its operator (a list for ``eq``...)."""

    def __init__(self, path: str, operator: str, reason: str) -> None:
        self.path = path
        self.operator = operator
        super().__init__(f"filter {path} {operator}: {reason}")


class ProjectionTimeout(QueryError):
    """Raised when the projector did not reach a log position within the allotted seconds."""

    def __init__(self, position: int, *, reached: int | None, seconds: float) -> None:
        self.position = position
        self.reached = reached
        self.seconds = seconds
        where = "no projector checkpoint yet" if reached is None else f"it is at {reached}"
        super().__init__(
            f"the read model did not reach log position {position} within {seconds:g} s ({where})"
        )
