"""Small helpers shared by test modules that are not fixtures."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest

POSTGRES_ENV = "PUBSUB_CACHE_TEST_POSTGRES_URL"

#: The console script, as a user or a supervisor runs it (the venv's ``pubsub-cache``).
SCRIPT = str(Path(sys.executable).parent / "pubsub-cache")


def postgres_url_or_skip() -> str:
    """The suite's PostgreSQL server; skipped locally without one, a failure under CI."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL half of the suite must run in CI")
    pytest.skip(f"{POSTGRES_ENV} is not set")


async def scrape(port: int, host: str = "127.0.0.1") -> tuple[str, str]:
    """One HTTP GET of a metrics endpoint: (status line and headers, body). The connection is
    checked to be of ``host``'s address family (an IPv6 listener is reached over IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    async with await anyio.connect_tcp(host, port) as stream:
        assert stream.extra(anyio.abc.SocketAttribute.family) == family
        await stream.send(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        chunks = []
        try:
            while True:
                chunks.append(await stream.receive())
        except anyio.EndOfStream:
            pass
    head, _, body = b"".join(chunks).decode().partition("\r\n\r\n")
    return head, body
