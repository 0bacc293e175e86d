"""Opening and closing slixmpp sessions inside the running asyncio loop; notification handler.

slixmpp stays behind this package: callers get :class:`PubsubClient` (typed requests, our
errors, our :class:`~pubsub_cache.events.types.Item`; defined in :mod:`.pubsub`, re-exported
here) and raw notification ``<message>`` elements for
:func:`~pubsub_cache.xmpp.translate.events_from_message`. slixmpp is asyncio only, so call this
from anyio running on its asyncio backend.

slixmpp 1.17 facts this module relies on (see DESIGN.md): ``process()`` is gone (connect, then
wait for ``session_start``); the client must be created inside the running loop; a failed
connection is retried forever in the background unless cancelled; RSM ``Set`` is not registered
on ``Pubsub``; ``retract()`` sends ``notify`` only when asked; the per-item ``pubsub_publish``
events lose items, so notifications are taken from one synchronous raw handler, which slixmpp
runs inline in arrival order.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import slixmpp
from slixmpp.plugins.xep_0059 import Set as RsmSet
from slixmpp.plugins.xep_0060.stanza import Pubsub
from slixmpp.xmlstream import register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from .errors import XmppConnectError, XmppError, XmppRequestError
from .pubsub import ItemsReply, PubsubClient, RsmInfo, SubscriptionState

TlsMode = Literal["starttls", "direct", "none"]

DEFAULT_PLUGINS: tuple[str, ...] = (
    "xep_0030",  # service discovery
    "xep_0004",  # data forms
    "xep_0059",  # result set management
    "xep_0060",  # publish-subscribe
    "xep_0115",  # entity capabilities (PEP +notify is announced through caps)
    "xep_0163",  # PEP
    "xep_0203",  # delayed delivery
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ItemsReply",
    "PubsubClient",
    "RsmInfo",
    "SubscriptionState",
    "TlsMode",
    "add_notification_handler",
    "connect",
    "disconnect",
    "session",
]


async def connect(
    jid: str,
    password: str,
    *,
    host: str | None = None,
    port: int | None = None,
    tls: TlsMode = "starttls",
    timeout: float = 10.0,
    plugins: Sequence[str] = DEFAULT_PLUGINS,
    pep_notify: Sequence[str] = (),
    presence: bool = True,
    on_notification: Callable[[ET.Element], None] | None = None,
    on_disconnected: Callable[[], None] | None = None,
) -> slixmpp.ClientXMPP:
    """Open a session and return the slixmpp client once ``session_start`` has fired.

    ``host``/``port`` bypass DNS SRV (either alone defaults the other to the JID's domain or
    5222). ``tls="none"`` is for loopback test servers: it allows SCRAM over a plaintext
    connection (never PLAIN, so the password itself is not sent). With ``"starttls"``, SASL
    without TLS is refused, so a server that offers no STARTTLS fails the connect.

    ``pep_notify`` namespaces are announced as ``+notify`` interests (XEP-0163) before the
    initial presence; ``presence=False`` sends none, and then the server sends no
    notifications to the bare JID. One client per session: to reconnect, connect again (and
    re-read synced nodes: notifications missed meanwhile are gone). Raises
    :class:`XmppConnectError`.

    ``on_notification`` is installed as by :func:`add_notification_handler` before the
    connection opens, so that nothing the initial presence triggers (the last PEP items of
    contacts) can arrive unhandled. ``on_disconnected`` is called once the connection of the
    established session is lost, whoever closed it.
    """
    xmpp = _client(jid, password, plugins, tls)
    address = (host or xmpp.boundjid.domain, port or 5222) if (host or port) else (None, None)

    def fail(cause: str) -> XmppConnectError:
        return XmppConnectError(jid=jid, host=address[0], port=address[1], cause=cause)

    settled = anyio.Event()
    failures: list[str | None] = []
    auth_conditions: list[str] = []

    def settle(failure: str | None) -> None:
        if not settled.is_set():
            failures.append(failure)
            settled.set()

    def auth_exhausted(_: object) -> None:
        if auth_conditions:
            settle(f"authentication failed ({auth_conditions[-1]})")
        elif tls == "starttls":
            settle("no acceptable SASL mechanism (was STARTTLS offered? tls='none' allows none)")
        else:
            settle("no acceptable SASL mechanism on this connection")

    handlers: dict[str, Callable[[Any], None]] = {
        "session_start": lambda _: settle(None),
        "failed_auth": lambda stanza: auth_conditions.append(str(stanza["condition"])),
        "failed_all_auth": auth_exhausted,
        "connection_failed": lambda error: settle(f"connection failed: {error}"),
        "stream_error": lambda error: settle(f"stream error: {error['condition']}"),
        "disconnected": lambda reason: settle(f"disconnected before the session began ({reason})"),
    }
    for event, handler in handlers.items():
        xmpp.add_event_handler(event, handler)
    if on_notification is not None:
        add_notification_handler(xmpp, on_notification)
    if on_disconnected is not None:
        # Registered before connecting: a loss right after session_start, before this
        # coroutine resumes, must not go unnoticed. Before the session it is never called.
        def lost(_reason: object) -> None:
            if failures == [None]:  # the session had begun
                on_disconnected()

        xmpp.add_event_handler("disconnected", lost)
    try:
        xmpp.connect(*address)
        with anyio.move_on_after(timeout):
            await settled.wait()
    except BaseException:
        await _abandon(xmpp)  # cancelled from outside: leave no connection attempt behind
        raise
    finally:
        for event, handler in handlers.items():
            xmpp.del_event_handler(event, handler)
    failure = failures[0] if failures else f"no session within {timeout:g} s"
    if failure is not None:
        await _abandon(xmpp)
        raise fail(failure)
    try:
        unusable = await _go_online(xmpp, pep_notify if presence else None, timeout)
    except BaseException:
        await _abandon(xmpp)  # cancelled from outside
        raise
    if unusable is not None:
        await _abandon(xmpp)
        raise fail(unusable)
    return xmpp


async def _go_online(
    xmpp: slixmpp.ClientXMPP, pep_notify: Sequence[str] | None, timeout: float
) -> str | None:
    # Announces the +notify interests and sends the initial presence (none when pep_notify is
    # None). A server handles one stream's stanzas in order: once it answered a ping sent
    # after the presence, the session is available, so whatever is published from then on
    # is notified to it. Without that wait, a publish right after connect() returned could
    # find the account still offline and be seen only by the next read of the node. Returns
    # why the session is unusable, or None.
    if pep_notify is None:
        return None
    for namespace in pep_notify:
        xmpp.plugin["xep_0030"].add_feature(f"{namespace}+notify")
    if pep_notify:
        await xmpp.plugin["xep_0115"].update_caps(broadcast=False)
    xmpp.send_presence()
    try:
        await PubsubClient(xmpp, timeout=timeout).ping()
    except XmppRequestError:
        pass  # an error answer (a server without XEP-0199) is an answer all the same
    except XmppError as exc:
        return f"no answer after the initial presence ({exc})"
    return None


def _client(jid: str, password: str, plugins: Sequence[str], tls: TlsMode) -> slixmpp.ClientXMPP:
    register_stanza_plugin(Pubsub, RsmSet)  # slixmpp 1.17 forgets it; idempotent
    _scram_in_c()
    xmpp = slixmpp.ClientXMPP(jid, password, ssl_context=_ssl_context())
    for name in plugins:
        xmpp.register_plugin(name)
    xmpp.enable_direct_tls = tls == "direct"
    xmpp.enable_starttls = tls == "starttls"
    xmpp.enable_plaintext = tls == "none"
    if tls == "none":
        xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
    return xmpp


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # One for every client of the process: slixmpp otherwise builds one per client, whatever
    # the TLS mode, and loads the system's CA bundle into each (200 accounts in one process:
    # 22.7 s to connect and 1.16 MB RSS each; 8.7 s and 0.26 MB with one context). The
    # settings are slixmpp's own; we never set what it would change in a client's context
    # (ciphers, a client certificate, a CA file).
    context = ssl.create_default_context()
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@functools.cache
def _scram_in_c() -> None:
    # SCRAM's Hi() is PBKDF2 with HMAC (RFC 5802, 2.2); slixmpp 1.17 computes it in a Python
    # loop, 32 ms per login at Prosody's 10,000 iterations against 3 ms for hashlib's (the
    # same bytes), on the event loop every account of the process shares. Done once, at the
    # first client (nothing happens at import time).
    from slixmpp.util.sasl.mechanisms import SCRAM

    def hi(self: Any, text: bytes, salt: bytes, iterations: int) -> bytes:
        return hashlib.pbkdf2_hmac(self.hash().name, bytes(text), salt, iterations)

    setattr(SCRAM, "Hi", hi)  # noqa: B010 (a method replaced on a third-party class)


async def disconnect(xmpp: slixmpp.ClientXMPP, *, timeout: float = 2.0) -> None:
    """Close the stream (waiting up to ``timeout`` for the server's answer), then the socket."""
    with anyio.CancelScope(shield=True):
        if xmpp.transport is not None:
            with anyio.move_on_after(timeout + 0.5):
                await xmpp.disconnect(wait=timeout)
        await _abandon(xmpp)


async def _abandon(xmpp: slixmpp.ClientXMPP) -> None:
    # Stop the background reconnect loop and the send-queue task: left alone, a failed
    # connect retries forever and both tasks outlive the client.
    xmpp.cancel_connection_attempt()
    xmpp.abort()
    sender = xmpp._run_out_filters
    if sender is not None and not sender.done():
        sender.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            await asyncio.gather(sender, return_exceptions=True)


@asynccontextmanager
async def session(
    jid: str,
    password: str,
    *,
    request_timeout: float = 10.0,
    **connect_options: Any,
) -> AsyncIterator[PubsubClient]:
    """``async with session(jid, password, host=..., tls="none") as client:``, disconnecting
    at the end whatever happens (options as for :func:`connect`)."""
    xmpp = await connect(jid, password, **connect_options)
    try:
        yield PubsubClient(xmpp, timeout=request_timeout)
    finally:
        await disconnect(xmpp)


def add_notification_handler(
    xmpp: slixmpp.ClientXMPP,
    callback: Callable[[ET.Element], None],
    *,
    name: str = "pubsub-cache notifications",
) -> Callable[[], None]:
    """Call ``callback(message_element)`` for every received pubsub notification ``<message>``.

    The callback runs synchronously inside slixmpp's receive path, in arrival order (coroutine
    handlers would run unordered); keep it short, e.g. hand the element to a queue, and do not
    let it raise: slixmpp only logs that. Returns a function that removes the handler.
    """
    xmpp.register_handler(
        Callback(name, StanzaPath("message/pubsub_event"), lambda msg: callback(msg.xml))
    )

    def remove() -> None:
        xmpp.remove_handler(name)

    return remove
