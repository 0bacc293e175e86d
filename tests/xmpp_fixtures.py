"""Fixtures of the XMPP tests, a pytest plugin loaded by tests/conftest.py: one local Prosody
for the session, and sessions on it.

Accounts: ``publisher`` (server admin: only admins may create nodes on Prosody's pubsub
component), ``reader`` and ``mallory`` (normal users). Without Prosody the server tests are
skipped locally and fail under CI, where the test command installs it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from pubsub_cache.ops.prosody import APT_INSTALL, LocalProsody
from pubsub_cache.xmpp.client import PubsubClient, session

USERS = ("publisher", "reader", "mallory")
ADMINS = ("publisher",)


def password_of(user: str) -> str:
    """The password of a test account."""
    return f"{user}-secret"


@pytest.fixture
def password() -> Callable[[str], str]:
    """``password("reader")``: the password of a test account."""
    return password_of


@pytest.fixture
def anyio_backend() -> str:
    """slixmpp is asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def prosody_installed() -> None:
    """Skip when Prosody is not installed; fail instead under CI, which installs it."""
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        message = f"prosody is not installed ({APT_INSTALL})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the XMPP tests must run in CI")
        pytest.skip(message)


@pytest.fixture(scope="session")
def prosody(prosody_installed: None) -> Iterator[LocalProsody]:
    """A running Prosody with the test accounts registered."""
    with LocalProsody(admins=ADMINS) as server:
        for user in USERS:
            server.register(user, password_of(user))
        yield server


Connect = Callable[..., AbstractAsyncContextManager[PubsubClient]]


@pytest.fixture
def connect_as(prosody: LocalProsody) -> Connect:
    """``async with connect_as("reader", **connect_options) as client:`` on the test server."""

    def open_session(user: str, **options: Any) -> AbstractAsyncContextManager[PubsubClient]:
        options = {"host": prosody.host, "port": prosody.port, "tls": "none", **options}
        full_jid = f"{prosody.jid(user)}/test-{uuid.uuid4().hex[:8]}"
        return session(full_jid, password_of(user), **options)

    return open_session


@pytest.fixture
async def publisher(connect_as: Connect) -> AsyncIterator[PubsubClient]:
    """A session of the admin account, which may create nodes."""
    async with connect_as("publisher") as client:
        yield client


@pytest.fixture
async def reader(connect_as: Connect) -> AsyncIterator[PubsubClient]:
    """A session of a normal account."""
    async with connect_as("reader") as client:
        yield client


@pytest.fixture
def node_name() -> str:
    """A node name no other test uses (the server lives for the whole session)."""
    return f"test-{uuid.uuid4().hex[:12]}"
