"""The surface common to the throwaway local XMPP servers (:class:`~.prosody.LocalProsody`,
:class:`~.ejabberd.LocalEjabberd`), so that a test or a benchmark can run on either; and what
their implementations may share: the life cycle built on start and stop, the loopback helpers.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self


class LocalXmppServer(Protocol):
    """A server on ``host:port`` (plaintext c2s, no TLS) serving ``domain`` and its pubsub
    service ``pubsub.<domain>``, with its data in ``workdir``."""

    @property
    def software(self) -> str:
        """``"prosody"`` or ``"ejabberd"``."""
        ...

    @property
    def domain(self) -> str: ...

    @property
    def pubsub_service(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def admins(self) -> Sequence[str]:
        """User names (local parts) of the server admins."""
        ...

    @property
    def workdir(self) -> Path: ...

    @property
    def running(self) -> bool: ...

    def jid(self, user: str) -> str:
        """The bare JID of ``user`` on this server."""
        ...

    def start(self) -> Self:
        """Start, and return once the port serves XMPP for ``domain``."""
        ...

    def stop(self) -> None:
        """Stop the server; its data stays in ``workdir``."""
        ...

    def restart(self) -> Self:
        """Stop and start on the same port; accounts survive."""
        ...

    def close(self) -> None:
        """Stop, and remove ``workdir`` when the server created it."""
        ...

    def register(self, user: str, password: str) -> str:
        """Create (or reset the password of) an account; returns its bare JID."""
        ...

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class ServerLifecycle:
    """``jid``, ``restart``, ``close`` and the context manager, from a subclass's ``start`` and
    ``stop``."""

    domain: str
    workdir: Path
    _owns_workdir: bool  # whether close() removes workdir (the server created it)

    def jid(self, user: str) -> str:
        """The bare JID of ``user`` on this server."""
        return f"{user}@{self.domain}"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def free_port(host: str) -> int:
    """A port the kernel considers free on ``host`` (free until someone binds it: a small race
    that a retry of the start would cover)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def answers_xmpp(host: str, port: int, domain: str) -> bool:
    """Whether ``host:port`` offers stream features to a client of ``domain`` (a bare TCP
    connect would also succeed on another program's port; it may still be another server for
    the same domain, which only the server's own log can tell)."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    try:
        with socket.create_connection((host, port), timeout=0.5) as probe:
            probe.sendall(header.encode())
            answer = probe.recv(4096)
            probe.sendall(b"</stream:stream>")
    except OSError:
        return False
    # Both servers echo any requested domain in the header, even one they do not serve (then
    # with a host-unknown stream error instead of features).
    return f"from='{domain}'".encode() in answer and b"<stream:features" in answer
