"""One ingest per account (issue 10, point 7): the ``ingest_lease`` row on both databases, and
two daemons of one account against the real Prosody: the second stands by, nothing is logged
twice, and it takes over when the first dies."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.log import EventLog
from pubsub_cache.events.types import ItemsPublished
from pubsub_cache.ops.cli_daemon import serve
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.projector.schema import ingest_lease
from pubsub_cache.xmpp.client import PubsubClient
from pubsub_cache.xmpp.ingest import Ingest, XmppAccount
from pubsub_cache.xmpp.lease import Holder, IngestLease, new_owner
from tests_support import SCRIPT
from xmpp_fixtures import FAST, NewAccount, cached_items, cached_node, eventually, running_daemon

pytestmark = pytest.mark.xmpp

ACCOUNT = "cache@example.org"
#: Renewed every TTL / 3: a loaded CI machine once delayed a renewal of a 1 s lease past its
#: end, and the second daemon took over from a live first.
TTL = 3.0
OPTIONS = dataclasses.replace(FAST, lease_ttl=TTL)


def entry(title: str) -> str:
    return f'<entry xmlns="http://www.w3.org/2005/Atom"><title>{title}</title></entry>'


# -- the lease itself ------------------------------------------------------------------------


def test_a_lease_is_taken_renewed_refused_and_taken_over_once_expired(engine: Engine) -> None:
    first, second = IngestLease(engine, ACCOUNT), IngestLease(engine, ACCOUNT)

    assert first.take(ttl=10, now=100) is None
    assert first.take(ttl=10, now=105) is None  # renewed: now held until 115
    held = second.take(ttl=10, now=114)
    assert held == Holder(first.owner, 1.0)
    assert IngestLease(engine, "other@example.org").take(ttl=10, now=114) is None  # per account

    assert second.take(ttl=10, now=116) is None  # expired: taken over
    assert first.take(ttl=10, now=117) == Holder(second.owner, 9.0)


def test_a_released_lease_is_free_at_once_and_only_its_owner_releases_it(engine: Engine) -> None:
    first, second = IngestLease(engine, ACCOUNT), IngestLease(engine, ACCOUNT)
    assert first.take(ttl=10, now=100) is None

    second.release()  # not the holder: changes nothing
    assert second.take(ttl=10, now=101) is not None
    first.release()
    assert second.take(ttl=10, now=101) is None


def test_a_holder_that_died_on_this_machine_is_taken_over_before_its_lease_expires(
    engine: Engine,
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, _pid, token, *namespace = new_owner().split(":")
    elsewhere = ":".join(["elsewhere", str(gone.pid), token, *namespace])
    assert IngestLease(engine, ACCOUNT, owner=elsewhere).take(ttl=3600, now=100) is None
    assert IngestLease(engine, ACCOUNT).take(ttl=10, now=101) is not None  # only expiry counts
    IngestLease(engine, ACCOUNT, owner=elsewhere).release()

    dead_owner = ":".join([host, str(gone.pid), token, *namespace])
    assert IngestLease(engine, ACCOUNT, owner=dead_owner).take(ttl=3600, now=100) is None
    assert IngestLease(engine, ACCOUNT).take(ttl=10, now=101) is None  # this host's dead pid
    with engine.connect() as connection:
        owner = connection.execute(sa.select(ingest_lease.c.owner)).scalar_one()
    assert owner != dead_owner


# -- two daemons of one account against Prosody ----------------------------------------------


def notified(engine: Engine, node: str, item_id: str) -> int:
    """How many notifications of ``item_id`` of ``node`` the log holds."""
    return sum(
        1
        for record in EventLog(engine).read(after=0, limit=100_000)
        if isinstance(record.event, ItemsPublished)
        and record.event.source == "notification"
        and record.event.node == node
        and any(item.id == item_id for item in record.event.items)
    )


async def _second_daemon(
    engine: Engine, account: XmppAccount, started: list[Ingest], up: anyio.Event
) -> None:
    async with anyio.create_task_group() as group:
        run = functools.partial(serve, engine, account, signals=False, options=OPTIONS)
        started.append(await group.start(run))
        up.set()


@pytest.mark.anyio
async def test_a_second_daemon_of_an_account_stands_by_then_takes_over_when_the_first_dies(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level("INFO", logger="pubsub_cache")
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)

    def items() -> dict[str, str | None]:
        return cached_items(engine, cache.jid, service, node_name)

    second: list[Ingest] = []
    second_up = anyio.Event()
    async with anyio.create_task_group() as others:
        async with running_daemon(engine, cache, options=OPTIONS) as first:
            first.request_sync(service, node_name, "test")
            await eventually(
                lambda: (
                    (cached_node(engine, cache.jid, service, node_name) or {}).get("sync_state")
                    == "COMPLETED"
                )
            )
            others.start_soon(_second_daemon, engine, cache, second, second_up)
            await eventually(lambda: "is ingested by another process" in caplog.text)

            await publisher.publish(service, node_name, "one", entry("one"))
            await eventually(lambda: "one" in items())
            await first.wait_idle()
            assert not second_up.is_set()  # standing by: no session, nothing it could log
            assert notified(engine, node_name, "one") == 1
            # The first dies without releasing its lease (as a kill -9 would leave it).
            monkeypatch.setattr(IngestLease, "release", lambda self: None)
        assert "took over" not in caplog.text

        with anyio.fail_after(TTL * 5):  # the lease expires, then the next look takes it
            await second_up.wait()
        assert "took over the ingest" in caplog.text
        await publisher.publish(service, node_name, "two", entry("two"))
        await eventually(lambda: "two" in items())
        await second[0].wait_idle()
        others.cancel_scope.cancel()

    assert notified(engine, node_name, "one") == 1
    assert notified(engine, node_name, "two") == 1
    assert caplog.text.count("is ingested by another process") == 1  # logged once


@pytest.mark.anyio
async def test_a_daemon_killed_with_sigkill_is_taken_over_before_its_lease_expires(
    prosody: LocalProsody,
    publisher: PubsubClient,
    new_account: NewAccount,
    engine: Engine,
    node_name: str,
) -> None:
    service, cache = prosody.pubsub_service, new_account("cache")
    await publisher.create_node(service, node_name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")} | {
        "PUBSUB_CACHE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PUBSUB_CACHE_JID": cache.jid,
        "PUBSUB_CACHE_PASSWORD": cache.password,
        "PUBSUB_CACHE_XMPP_HOST": cache.host or "",
        "PUBSUB_CACHE_XMPP_PORT": str(cache.port),
        "PUBSUB_CACHE_XMPP_TLS": cache.tls,
        "PUBSUB_CACHE_LOG_LEVEL": "WARNING",
    }
    first = subprocess.Popen(
        [SCRIPT, "ingest"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await eventually(lambda: _holder(engine, cache.jid) == f":{first.pid}:", timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # Its lease has the default time (30 s) to run: a dead process of this machine is
        # taken over at once instead.
        with anyio.fail_after(10):
            async with running_daemon(engine, cache, options=OPTIONS) as second:
                second.request_sync(service, node_name, "test")
                await eventually(
                    lambda: (
                        (cached_node(engine, cache.jid, service, node_name) or {}).get("sync_state")
                        == "COMPLETED"
                    )
                )
                await publisher.publish(service, node_name, "one", entry("one"))
                await eventually(
                    lambda: "one" in cached_items(engine, cache.jid, service, node_name)
                )
                await second.wait_idle()
    finally:
        first.kill()
        first.wait(10)
    assert notified(engine, node_name, "one") == 1


def _holder(engine: Engine, account: str) -> str | None:
    """``:pid:`` of the lease holder of ``account``, or ``None``."""
    try:
        with engine.connect() as connection:
            owner = connection.execute(
                sa.select(ingest_lease.c.owner).where(ingest_lease.c.account == account)
            ).scalar()
    except sa.exc.DBAPIError:  # the daemon has not created the tables yet
        return None
    return None if owner is None else f":{owner.split(':')[1]}:"
