"""The cache embedded in a slixmpp program (issue 14, points 2, 5 and 6), against a real Prosody,
on both databases, with no daemon: the README's example program (examples/microblog.py) with
the ``pubsub_cache`` plugin. Its first read goes to the server, the node is then synced through
its own session, later reads are answered from the cache without an Iq to the server, its change
feed shows a new post, and reads still answer once the server is gone."""

from __future__ import annotations

import importlib.util
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from sqlalchemy.engine import Engine

from helpers import atom
from pubsub_cache.ops.dev.prosody import LocalProsody
from pubsub_cache.xmpp.ingest import XmppAccount
from pubsub_cache.xmpp.lease import IngestLease
from pubsub_cache.xmpp.plugin import embedded_cache
from pubsub_cache.xmpp.pubsub import PubsubClient
from pubsub_cache.xmpp.stanzas import NS_PUBSUB, NS_RSM
from xmpp_fixtures import NewAccount, account_on, befriend, session_of

pytestmark = [pytest.mark.anyio, pytest.mark.xmpp]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "microblog.py"
BLOG = "urn:xmpp:microblog:0"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("microblog_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@asynccontextmanager
async def program(account: XmppAccount, engine: Engine) -> AsyncIterator[ClientXMPP]:
    """The example's session of ``account``, with the cache on ``engine``'s database."""
    async with example.open_session(
        f"{account.jid}/program-{uuid.uuid4().hex[:6]}",
        account.password,
        url_of(engine),
        host=account.host,
        port=account.port,
        plaintext=True,
    ) as xmpp:
        await embedded_cache(xmpp).ready()
        yield xmpp


class IqCounter:
    """Counts the ``<items/>`` requests that leave for the server (an outgoing filter)."""

    def __init__(self, xmpp: ClientXMPP) -> None:
        self.sent = 0
        xmpp.add_filter("out", self._count)

    def _count(self, stanza: Any) -> Any:
        if stanza.xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items") is not None:
            self.sent += 1
        return stanza


def ids_of(reply: Any) -> list[str]:
    return [item["id"] for item in reply["pubsub"]["items"]]


def payloads_of(reply: Any) -> list[str]:
    return [ET.canonicalize(ET.tostring(i["payload"])) for i in reply["pubsub"]["items"]]


async def until(check: Any, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


@asynccontextmanager
async def friends(poster: XmppAccount, reader: XmppAccount) -> AsyncIterator[PubsubClient]:
    """The poster's session, in each other's rosters with ``reader``."""
    async with session_of(poster) as posting, session_of(reader) as reading:
        await befriend(posting, reading)
    async with session_of(poster) as posting:
        yield posting


async def synced(xmpp: ClientXMPP, service: str, node: str = BLOG) -> None:
    """Wait until the node is COMPLETED in the cache."""
    cache = embedded_cache(xmpp)

    async def completed() -> bool:
        state = await cache.query.node_state(cache.account, service, node)
        return state is not None and state.sync_state == "COMPLETED"

    await until(completed)


async def test_a_program_reads_live_then_syncs_through_its_session_then_reads_the_cache(
    prosody: LocalProsody, publisher: PubsubClient, new_account: NewAccount, engine: Engine
) -> None:
    # A blog on the pubsub component the reader does not subscribe to: nothing reaches the
    # cache before the program's first read.
    service, node = prosody.pubsub_service, f"{BLOG}:test-{uuid.uuid4().hex[:8]}"
    await publisher.create_node(service, node)
    for n in range(3):
        await publisher.publish(service, node, f"post-{n}", atom(f"Post {n}"))
    async with program(new_account("reader"), engine) as xmpp:
        pubsub: Any = xmpp.plugin["xep_0060"]  # slixmpp's methods are untyped
        cache = embedded_cache(xmpp)
        assert cache.ingesting  # no daemon: this session is the ingest
        counter = IqCounter(xmpp)
        live = await pubsub.get_items(service, node)
        assert ids_of(live) == ["post-0", "post-1", "post-2"]
        assert (cache.answered, counter.sent) == (0, 1)
        await synced(xmpp, service, node)  # asked for by that read, done through the session
        # From the cache: the same answers, and no request leaves for the server.
        sent = counter.sent
        cached = await pubsub.get_items(service, node)
        assert ids_of(cached) == ids_of(live)
        assert payloads_of(cached) == payloads_of(live)
        newest = await pubsub.get_items(service, node, max_items=2)
        assert ids_of(newest) == ["post-1", "post-2"]
        one = await pubsub.get_item(service, node, "post-0")
        assert ids_of(one) == ["post-0"]
        page = await paged(xmpp, service, node, max=2, after="post-0")
        assert ids_of(page) == ["post-1", "post-2"]
        assert page["pubsub"]["rsm"]["count"] == "3"
        assert page["pubsub"]["rsm"]["first"] == "post-1"
        with pytest.raises(IqError) as error:
            await paged(xmpp, service, node, max=2, after="no-such-post")
        assert error.value.condition == "item-not-found"
        assert counter.sent == sent
        assert cache.answered == 5


async def paged(xmpp: ClientXMPP, service: str, node: str, **rsm: Any) -> Any:
    """A hand-built ``<items/>`` request with an XEP-0059 ``<set/>``."""
    iq = xmpp.Iq(sto=service, stype="get")
    iq["pubsub"]["items"]["node"] = node
    for name, value in rsm.items():
        iq["pubsub"]["rsm"][name] = str(value)
    assert iq.xml.find(f".//{{{NS_RSM}}}set") is not None
    return await iq.send(timeout=5)  # type: ignore[no-untyped-call]


async def test_the_example_shows_the_blog_then_a_new_post_from_the_change_feed(
    new_account: NewAccount, engine: Engine
) -> None:
    poster, reader = new_account("poster"), new_account("reader")
    async with friends(poster, reader) as posting:
        await posting.publish_pep(BLOG, "first", atom("First post"))
        async with program(reader, engine) as xmpp:
            shown: list[str] = []
            async with anyio.create_task_group() as group:
                show = example.show_microblog
                group.start_soon(lambda: show(xmpp, poster.jid, show=shown.append))
                await until(lambda: _true(shown == ["first: First post"]))
                await synced(xmpp, poster.jid)
                await posting.publish_pep(BLOG, "second", atom("Second post"))
                await until(lambda: _true("second: Second post" in shown))
                group.cancel_scope.cancel()


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
def own_prosody(tmp_path: Path) -> Iterator[LocalProsody]:
    """A Prosody of this test's own, to stop under the program."""
    with LocalProsody(admins=["publisher"], workdir=tmp_path / "prosody") as server:
        yield server


async def test_cached_reads_answer_with_the_server_gone(
    own_prosody: LocalProsody, engine: Engine
) -> None:
    poster, reader = account_on(own_prosody, "poster"), account_on(own_prosody, "reader")
    async with friends(poster, reader) as posting:
        await posting.publish_pep(BLOG, "kept", atom("Kept post"))
    async with program(reader, engine) as xmpp:
        pubsub: Any = xmpp.plugin["xep_0060"]
        await pubsub.get_items(poster.jid, BLOG)
        await synced(xmpp, poster.jid)
        gone = anyio.Event()
        xmpp.add_event_handler("disconnected", lambda _: gone.set())
        own_prosody.stop()
        with anyio.fail_after(10):
            await gone.wait()
        with anyio.fail_after(5):
            cached = await pubsub.get_items(poster.jid, BLOG)
        assert ids_of(cached) == ["kept"]


def test_the_readme_library_section_is_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The query library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert EXAMPLE.read_text() in blocks


async def test_beside_a_daemon_of_the_account_the_plugin_only_reads(
    new_account: NewAccount, engine: Engine
) -> None:
    reader = new_account("reader")
    daemon = IngestLease(engine, reader.jid)  # as `pubsub-cache run` holds it
    assert daemon.take() is None
    try:
        async with program(reader, engine) as xmpp:
            assert not embedded_cache(xmpp).ingesting
    finally:
        daemon.release()
