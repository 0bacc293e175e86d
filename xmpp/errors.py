"""Errors of the XMPP edge: slixmpp's exceptions never leave :mod:`pubsub_cache.xmpp`.

Every error builds its own one-line message from what it carries (host, port, JID, service,
node, item), so a log line or a test failure says what was asked of whom.
"""

from __future__ import annotations

from pubsub_cache.errors import PubsubCacheError


class XmppError(PubsubCacheError):
    """Raised for any failure talking to an XMPP server; catch this for "the XMPP side failed"."""


class XmppConnectError(XmppError):
    """Raised when a session cannot be opened: unreachable server, failed auth, timeout."""

    def __init__(self, *, jid: str, host: str | None, port: int | None, cause: str) -> None:
        self.jid = jid
        self.host = host
        self.port = port
        self.cause = cause
        where = f"{host or '(DNS SRV of the JID domain)'}:{port if port is not None else 'default'}"
        super().__init__(f"cannot open an XMPP session as {jid} on {where}: {cause}")


class XmppTimeout(XmppError):
    """Raised when the server does not answer a request within the allotted seconds."""

    def __init__(self, operation: str, *, service: str, node: str | None, seconds: float) -> None:
        self.operation = operation
        self.service = service
        self.node = node
        self.seconds = seconds
        on = f"node {node!r} of {service}" if node is not None else service
        super().__init__(f"{operation} on {on}: no answer within {seconds:g} s")


class XmppRequestError(XmppError):
    """Raised when the server answers a request with an error stanza.

    ``condition`` is the RFC 6120 defined condition (``item-not-found``, ``forbidden``, ...),
    ``pubsub_condition`` the XEP-0060 application condition when there is one (``invalid-jid``,
    ``nodeid-required``, ...), ``text`` the server's human-readable text (often empty).
    """

    def __init__(
        self,
        operation: str,
        *,
        service: str,
        node: str | None,
        condition: str,
        text: str = "",
        error_type: str | None = None,
        pubsub_condition: str | None = None,
        item_id: str | None = None,
    ) -> None:
        self.operation = operation
        self.service = service
        self.node = node
        self.condition = condition
        self.text = text
        self.error_type = error_type
        self.pubsub_condition = pubsub_condition
        self.item_id = item_id
        on = f"node {node!r} of {service}" if node is not None else service
        if item_id is not None:
            on = f"item {item_id!r} of {on}"
        detail = condition + (f" ({pubsub_condition})" if pubsub_condition else "")
        if text:
            detail += f": {text}"
        super().__init__(f"{operation} on {on} failed: {detail}")


class XmppProtocolError(XmppError):
    """Raised when a server's reply breaks XEP-0060/XEP-0059 (an item without id, a cursor
    that does not advance), so that its answer cannot be trusted to be complete."""

    def __init__(self, operation: str, *, service: str, node: str | None, reason: str) -> None:
        self.operation = operation
        self.service = service
        self.node = node
        self.reason = reason
        on = f"node {node!r} of {service}" if node is not None else service
        super().__init__(f"{operation} on {on}: unusable reply: {reason}")


class XmppNotConnected(XmppError):
    """Raised when a request is made on a client whose session has ended."""

    def __init__(self, operation: str, *, jid: str) -> None:
        self.operation = operation
        self.jid = jid
        super().__init__(f"{operation}: the session of {jid} is not connected")
