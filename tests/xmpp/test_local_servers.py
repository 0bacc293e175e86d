"""The throwaway local servers (ops/dev/prosody.py, ops/dev/ejabberd.py) keep the promises of
:class:`~pubsub_cache.ops.dev.xmpp_server.LocalXmppServer`, each test once on each server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.ops.dev.ejabberd import (
    EjabberdPortInUse,
    EjabberdWorkdirUnreachable,
    LocalEjabberd,
)
from pubsub_cache.ops.dev.prosody import LocalProsody, ProsodyStartFailed
from pubsub_cache.ops.dev.xmpp_server import LocalXmppServer
from pubsub_cache.xmpp.errors import XmppRequestError
from xmpp_fixtures import password_of, session_on

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]


def entry(text: str) -> str:
    return f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{text}</title></entry>"


def test_both_servers_describe_themselves(xmpp_server: LocalXmppServer) -> None:
    assert xmpp_server.running
    assert xmpp_server.software in {"prosody", "ejabberd"}
    assert xmpp_server.pubsub_service == f"pubsub.{xmpp_server.domain}"
    assert xmpp_server.jid("reader") == f"reader@{xmpp_server.domain}"
    assert xmpp_server.admins == ("publisher",)
    assert xmpp_server.workdir.is_dir()


async def test_a_registered_account_logs_in(xmpp_server: LocalXmppServer) -> None:
    user = f"fresh-{uuid.uuid4().hex[:8]}"

    assert xmpp_server.register(user, password_of(user)) == xmpp_server.jid(user)

    async with session_on(xmpp_server, user) as client:
        assert client.jid == xmpp_server.jid(user)
        await client.ping()


async def test_registering_again_resets_the_password(xmpp_server: LocalXmppServer) -> None:
    user = f"fresh-{uuid.uuid4().hex[:8]}"
    xmpp_server.register(user, "first")

    xmpp_server.register(user, password_of(user))

    async with session_on(xmpp_server, user) as client:
        await client.ping()


async def test_the_admin_creates_a_node_with_max_items_publishes_and_reads_back(
    xmpp_server: LocalXmppServer,
) -> None:
    service, node = xmpp_server.pubsub_service, f"test-{uuid.uuid4().hex[:12]}"
    async with session_on(xmpp_server, "publisher") as publisher:
        await publisher.create_node(service, node, {"max_items": 3})
        assert (await publisher.get_node_config(service, node))["pubsub#max_items"] == ["3"]
        for index in range(5):
            await publisher.publish(service, node, f"item-{index}", entry(f"n{index}"))

    async with session_on(xmpp_server, "reader") as reader:
        reply = await reader.get_items(service, node)

    # Both servers keep the newest max_items and list them oldest first.
    assert [item.id for item in reply.items] == ["item-2", "item-3", "item-4"]
    assert reply.items[-1].payload is not None
    assert "n4" in reply.items[-1].payload


async def test_ejabberd_takes_nodes_of_ten_thousand_items(ejabberd: LocalEjabberd) -> None:
    # Tests fill nodes this large; ejabberd's own ceiling (max_items_node) is 1000.
    service, node = ejabberd.pubsub_service, f"test-{uuid.uuid4().hex[:12]}"
    async with session_on(ejabberd, "publisher") as publisher:
        await publisher.create_node(service, node, {"max_items": 10_000})
        config = await publisher.get_node_config(service, node)
    assert config["pubsub#max_items"] == ["10000"]


def test_restart_keeps_the_port_and_the_accounts(xmpp_server: LocalXmppServer) -> None:
    user = f"kept-{uuid.uuid4().hex[:8]}"
    xmpp_server.register(user, password_of(user))
    node = f"kept-{uuid.uuid4().hex[:8]}"
    service = xmpp_server.pubsub_service

    async def create() -> None:
        async with session_on(xmpp_server, "publisher") as publisher:
            await publisher.create_node(service, node)
            await publisher.publish(service, node, "one", entry("kept?"))

    async def read() -> list[str] | str:
        # The item ids, or the error condition.
        async with session_on(xmpp_server, user) as client:
            try:
                return [item.id for item in (await client.get_items(service, node)).items]
            except XmppRequestError as exc:
                return exc.condition

    anyio.run(create)
    port = xmpp_server.port

    assert xmpp_server.restart() is xmpp_server

    assert xmpp_server.running
    assert xmpp_server.port == port
    # Accounts live on disk on both; pubsub data in memory on Prosody, in Mnesia on ejabberd.
    expected = ["one"] if xmpp_server.software == "ejabberd" else "item-not-found"
    assert anyio.run(read) == expected


def test_a_second_server_on_a_taken_port_fails_clearly(xmpp_server: LocalXmppServer) -> None:
    # Typed so that mypy checks both classes against the protocol.
    kinds: dict[str, Callable[..., LocalXmppServer]] = {
        "prosody": LocalProsody,
        "ejabberd": LocalEjabberd,
    }
    intruder = kinds[xmpp_server.software](port=xmpp_server.port)
    try:
        with pytest.raises(PubsubCacheError, match="the port is in use by another") as raised:
            intruder.start()
        assert not intruder.running
    finally:
        intruder.close()

    assert isinstance(raised.value, ProsodyStartFailed | EjabberdPortInUse)
    assert f"port {xmpp_server.port}" in str(raised.value)

    async def still_served() -> None:
        async with session_on(xmpp_server, "reader") as reader:
            await reader.ping()

    anyio.run(still_served)  # the first server was not disturbed


@pytest.mark.usefixtures("ejabberd_installed")
def test_ejabberd_refuses_a_workdir_its_user_cannot_reach(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    server = LocalEjabberd(workdir=locked / "ejabberd")

    with pytest.raises(EjabberdWorkdirUnreachable, match="cannot reach") as raised:
        server.start()

    assert raised.value.blocked_at == locked
    assert not server.running
