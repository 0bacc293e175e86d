"""A TCP proxy the tests control, in front of the suite's PostgreSQL server: a database outage
on demand, without stopping the server other tests share.

::

    with PgProxy.in_front_of(url) as proxy:
        engine = create_engine(proxy.proxied(url))  # the same database, through the proxy
        proxy.go_down()                             # every connection dropped, new ones reset
        proxy.come_back()                           # accepted and forwarded again

:func:`proxied_postgres` gives a migrated scratch database behind a proxy, with an engine
through it (for the code under test) and one straight to the server (for the test itself).

While down, the proxy still listens but resets every connection the moment it is accepted:
clients see what a stopped server looks like to them (the connection is refused or closed before
the start-up message is answered), and the port stays ours, so no other process can take it
between the outage and the return. Threads, not asyncio: the daemon's database work runs in
worker threads, and the proxy must not depend on the test's event loop being responsive.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

from sqlalchemy.engine import Engine, make_url

from pubsub_cache.events.db import create_engine
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import scratch_postgres
from tests_support import postgres_url_or_skip

#: SO_LINGER with a zero timeout: close() sends a RST instead of a FIN (a refused connection).
_RESET = struct.pack("ii", 1, 0)


class PgProxy:
    """Forwards connections on 127.0.0.1:``port`` to ``upstream``; see the module docstring."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._up = True
        self._open: set[socket.socket] = set()
        self._closed = False
        self.accepted = 0
        """Connections forwarded so far."""
        self.refused = 0
        """Connections reset because the proxy was down: the clients' attempts during outages."""
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)

    @classmethod
    @contextmanager
    def in_front_of(cls, url: str) -> Iterator[Self]:
        """A running proxy to the server of ``url``; :meth:`proxied` rewrites URLs onto it."""
        parsed = make_url(url)
        proxy = cls((parsed.host or "127.0.0.1", parsed.port or 5432))
        proxy._thread.start()
        try:
            yield proxy
        finally:
            proxy.close()

    def proxied(self, url: str) -> str:
        """``url`` (same credentials, database and options) through this proxy."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    def go_down(self) -> None:
        """Drop every open connection and reset new ones until :meth:`come_back`."""
        with self._lock:
            self._up = False
            dropped, self._open = self._open, set()
        for sock in dropped:
            _reset(sock)

    def refuse_new(self) -> None:
        """Reset new connections but keep the open ones (a server at ``max_connections``)."""
        with self._lock:
            self._up = False

    def come_back(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._up = True

    def close(self) -> None:
        """Stop listening and drop everything."""
        self.go_down()
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                up = self._up
            if not up:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if not self._up:  # went down while we connected
                    _reset(client)
                    _reset(server)
                    continue
                self._open |= {client, server}
                self.accepted += 1
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        # Either side closing (or the proxy resetting both) ends both directions.
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with self._lock:
            self._open -= {source, target}
        _reset(source)
        _reset(target)


@dataclass(frozen=True)
class ProxiedDatabase:
    """A migrated scratch database, reached through ``proxy`` (``engine``, the code under test)
    or straight (``direct``, the test's own reads and appends, which no outage touches)."""

    proxy: PgProxy
    engine: Engine
    direct: Engine


@contextmanager
def proxied_postgres(prefix: str = "outage") -> Iterator[ProxiedDatabase]:
    """A fresh schema on the suite's PostgreSQL server behind a :class:`PgProxy` (skipped
    locally without a server, a failure under CI: see tests_support)."""
    with (
        scratch_postgres(postgres_url_or_skip(), prefix=prefix) as url,
        PgProxy.in_front_of(url) as proxy,
    ):
        direct = create_engine(url)
        engine = create_engine(proxy.proxied(url))
        try:
            ensure_schema(direct)
            yield ProxiedDatabase(proxy, engine, direct)
        finally:
            engine.dispose()
            direct.dispose()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
