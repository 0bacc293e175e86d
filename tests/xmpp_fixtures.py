"""Fixtures of the XMPP tests, a pytest plugin loaded by tests/conftest.py: one local Prosody
for the session, sessions on it, and the daemon running in the test's event loop (one account,
or many synced to one node: ``serving``); one local ejabberd for the session too, and
``xmpp_server``, which runs a test once on each server.

Accounts on both servers: ``publisher`` (server admin: only admins may create nodes on Prosody's
pubsub component), ``reader`` and ``mallory`` (normal users). Without Prosody (or ejabberd) the
server tests are skipped locally and fail under CI, where the test command installs both.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import SyncRequested
from pubsub_cache.ops.cli_daemon import serve, serve_accounts
from pubsub_cache.ops.dev.ejabberd import APT_INSTALL as EJABBERD_APT_INSTALL
from pubsub_cache.ops.dev.ejabberd import LocalEjabberd
from pubsub_cache.ops.dev.prosody import APT_INSTALL, LocalProsody
from pubsub_cache.ops.dev.xmpp_server import LocalXmppServer
from pubsub_cache.projector.schema import pubsub_node
from pubsub_cache.xmpp.accounts import IngestPool
from pubsub_cache.xmpp.backoff import Backoff
from pubsub_cache.xmpp.client import PubsubClient, session
from pubsub_cache.xmpp.ingest import Ingest, IngestOptions, XmppAccount
from pubsub_cache.xmpp.reconcile import ReconcileOptions

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


@pytest.fixture(scope="session")
def ejabberd_installed() -> None:
    """Skip when ejabberd is not installed (or not run as root, which ejabberdctl needs); fail
    instead under CI, which installs it and runs as root."""
    message = None
    if shutil.which("ejabberdctl") is None:
        message = f"ejabberd is not installed ({EJABBERD_APT_INSTALL})"
    elif os.geteuid() != 0:
        message = "a local ejabberd needs root (ejabberdctl switches to the 'ejabberd' user)"
    if message is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the XMPP tests must run in CI")
        pytest.skip(message)


@pytest.fixture(scope="session")
def ejabberd(ejabberd_installed: None) -> Iterator[LocalEjabberd]:
    """A running ejabberd with the test accounts registered (about 2.5 s to set up)."""
    with LocalEjabberd(admins=ADMINS) as server:
        for user in USERS:
            server.register(user, password_of(user))
        yield server


@pytest.fixture(scope="session", params=["prosody", "ejabberd"], ids=["prosody", "ejabberd"])
def xmpp_server(request: pytest.FixtureRequest) -> LocalXmppServer:
    """The running ``prosody`` and then the running ``ejabberd``: a test asking for it runs on
    both servers (same accounts on each)."""
    server: LocalXmppServer = request.getfixturevalue(request.param)
    return server


def session_on(
    server: LocalXmppServer, user: str, **options: Any
) -> AbstractAsyncContextManager[PubsubClient]:
    """``async with session_on(server, "reader") as client:``, a test account's session."""
    options = {"host": server.host, "port": server.port, "tls": "none", **options}
    full_jid = f"{server.jid(user)}/test-{uuid.uuid4().hex[:8]}"
    return session(full_jid, password_of(user), **options)


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


# -- the ingest: fresh accounts, a running daemon, and reads of what it produced --------------

#: Short delays, so that reconnections and retries happen within a test's patience.
FAST = IngestOptions(
    reconnect=Backoff(initial=0.05, cap=0.5),
    sync_retry=Backoff(initial=0.1, cap=1.0),
    request_poll=0.1,
    keepalive=30.0,
    request_timeout=5.0,
    connect_timeout=5.0,
    reconcile=ReconcileOptions(after_publish=0.05, spacing=0.0, fallback_interval=0.5),
)

NewAccount = Callable[[str], XmppAccount]


@pytest.fixture
def new_account(prosody: LocalProsody) -> NewAccount:
    """``new_account("cache")``: a fresh account (``cache-<hex>``) on the test server, so that
    no other test's subscriptions or roster reach it."""
    return lambda prefix: account_on(prosody, f"{prefix}-{uuid.uuid4().hex[:8]}")


def account_on(server: LocalXmppServer, user: str) -> XmppAccount:
    """Register ``user`` on ``server``; its :class:`XmppAccount` over plaintext loopback."""
    server.register(user, password_of(user))
    return XmppAccount(
        jid=server.jid(user),
        password=password_of(user),
        host=server.host,
        port=server.port,
        tls="none",
    )


def session_of(account: XmppAccount, **options: Any) -> AbstractAsyncContextManager[PubsubClient]:
    """A plain session of ``account`` (not the daemon's)."""
    return session(
        f"{account.jid}/test-{uuid.uuid4().hex[:8]}",
        account.password,
        host=account.host,
        port=account.port,
        tls=account.tls,
        **options,
    )


@asynccontextmanager
async def running_daemon(
    engine: Engine,
    account: XmppAccount,
    *,
    projector: bool = True,
    options: IngestOptions = FAST,
) -> AsyncIterator[Ingest]:
    """The daemon (ingest and, by default, projector) as ``pubsub-cache run`` runs it, in this
    event loop; stopped (and its queue appended) on leaving the block."""
    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            ingest = await group.start(
                functools.partial(
                    serve, engine, account, projector=projector, signals=False, options=options
                )
            )
        try:
            yield ingest
        finally:
            group.cancel_scope.cancel()


@asynccontextmanager
async def serving(
    server: LocalXmppServer,
    engine: Engine,
    count: int,
    service: str,
    node: str,
    *,
    options: IngestOptions = FAST,
) -> AsyncIterator[tuple[IngestPool, list[XmppAccount]]]:
    """``count`` new accounts served by one daemon (as ``pubsub-cache run`` with an accounts
    file), all connected and synced to ``node``; stopped on leaving the block."""
    tag = uuid.uuid4().hex[:6]
    accounts = [account_on(server, f"shared-{tag}-{number}") for number in range(count)]
    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            start = functools.partial(
                serve_accounts, engine, accounts, signals=False, options=options
            )
            pool = await group.start(start)
        try:
            with anyio.fail_after(30):
                await pool.wait_until(lambda states: all(s.state == "connected" for s in states))
            now = datetime.now(UTC)
            requests = [
                SyncRequested(account=account.jid, service=service, node=node, observed_at=now)
                for account in accounts
            ]
            await anyio.to_thread.run_sync(EventLog(engine).append, requests)
            await eventually(lambda: _synced(engine, accounts, service, node), timeout=30)
            yield pool, accounts
        finally:
            group.cancel_scope.cancel()


def _synced(engine: Engine, accounts: Sequence[XmppAccount], service: str, node: str) -> bool:
    return all(
        (cached_node(engine, account.jid, service, node) or {}).get("sync_state") == "COMPLETED"
        for account in accounts
    )


def holding(
    engine: Engine, accounts: Sequence[XmppAccount], service: str, node: str, item: str
) -> Callable[[], bool]:
    """Whether every one of ``accounts`` has ``item`` in its view."""
    return lambda: all(
        item in cached_items(engine, account.jid, service, node) for account in accounts
    )


async def idle(pool: IngestPool) -> None:
    """Return once no account of ``pool`` has a sync, fetch or check queued or running."""
    with anyio.fail_after(10):
        for ingest in pool.ingests.values():
            await ingest.wait_idle()


async def eventually(check: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait until ``check()`` (run in a worker thread: it may query the database) is true."""
    with anyio.fail_after(timeout):
        while not await anyio.to_thread.run_sync(check):
            await anyio.sleep(0.02)


def cached_items(engine: Engine, account: str, service: str, node: str) -> dict[str, str | None]:
    """The read model's items of a node: item id to payload."""
    query = (
        sa.select(ITEM_ROWS.c.item_id, ITEM_ROWS.c.payload)
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(
            pubsub_node.c.account == account,
            pubsub_node.c.service == service,
            pubsub_node.c.node == node,
        )
    )
    with engine.connect() as connection:
        return {row.item_id: row.payload for row in connection.execute(query)}


def cached_node(engine: Engine, account: str, service: str, node: str) -> dict[str, Any] | None:
    """The read model's row of a node, as a dict; ``None`` when it has none."""
    query = sa.select(pubsub_node).where(
        pubsub_node.c.account == account,
        pubsub_node.c.service == service,
        pubsub_node.c.node == node,
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return dict(row._mapping) if row is not None else None


async def befriend(one: PubsubClient, other: PubsubClient) -> None:
    """Mutual presence subscription (PEP notifications go to contacts); slixmpp accepts and
    subscribes back by itself (auto_authorize, auto_subscribe). Prosody hands subscription
    requests only to sessions that asked for their roster."""
    for client in (one, other):
        await client.xmpp.get_roster()
    one.xmpp.send_presence_subscription(pto=other.jid)
    with anyio.fail_after(5):
        while not (
            one.xmpp.client_roster[other.jid]["subscription"] == "both"
            and other.xmpp.client_roster[one.jid]["subscription"] == "both"
        ):
            await anyio.sleep(0.02)
