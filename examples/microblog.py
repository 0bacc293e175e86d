"""A contact's microblog (XEP-0277) from the cache embedded in a slixmpp program, then each new
post as it arrives.

    python examples/microblog.py JID PASSWORD CONTACT [DATABASE_URL]

The first run reads the blog from the server and the cache syncs it through this session; later
reads (and runs) are answered from the cache, even with the server away.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from slixmpp import ClientXMPP

from pubsub_cache.xmpp.plugin import embedded_cache

MICROBLOG = "urn:xmpp:microblog:0"
ATOM_TITLE = "{http://www.w3.org/2005/Atom}title"


@asynccontextmanager
async def open_session(
    jid: str, password: str, database: str, **connect: Any
) -> AsyncIterator[ClientXMPP]:
    """A session of ``jid`` with the cache in it (``connect``: host, port, plaintext)."""
    xmpp = ClientXMPP(jid, password)
    xmpp.register_plugin("xep_0060")
    xmpp.register_plugin(
        "pubsub_cache", pconfig={"database": database}, module="pubsub_cache.xmpp.plugin"
    )
    if connect.pop("plaintext", False):  # a loopback test server without TLS
        xmpp.enable_starttls, xmpp.enable_plaintext = False, True
        xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
    started = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: started.set())
    xmpp.connect(connect.get("host"), connect.get("port"))
    await asyncio.wait_for(started.wait(), 20)
    xmpp.send_presence()
    await xmpp.get_roster()
    try:
        yield xmpp
    finally:
        await embedded_cache(xmpp).close()
        await xmpp.disconnect()


async def show_microblog(
    xmpp: ClientXMPP, contact: str, *, show: Callable[[str], object] = print, last: int = 10
) -> None:
    """Print the contact's ``last`` posts, then every new one; runs until cancelled."""
    cache, pubsub = embedded_cache(xmpp), xmpp.plugin["xep_0060"]
    # A plain XEP-0060 request: the cache answers it when it holds the node, else the server.
    reply = await pubsub.get_items(contact, MICROBLOG, max_items=last)  # type: ignore[no-untyped-call]
    for item in reply["pubsub"]["items"]:
        show(f"{item['id']}: {item.xml.findtext(f'*/{ATOM_TITLE}')}")
    # The change feed: woken by the cache's log, each change applied before it is handed out.
    async for change in cache.query.watch(cache.account, contact, MICROBLOG):
        if change.kind != "published":
            continue
        ids = list(change.item_ids)
        page = await cache.query.get_items(cache.account, contact, MICROBLOG, item_ids=ids)
        for post in page.items:
            show(f"{post.id}: {post.parsed['title'] if post.parsed else None}")


async def main(jid: str, password: str, contact: str, database: str) -> None:
    async with open_session(jid, password, database) as xmpp:
        await show_microblog(xmpp, contact)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if len(arguments) not in (3, 4):
        sys.exit(__doc__)
    database = arguments[3] if len(arguments) == 4 else "sqlite:///microblog-cache.sqlite3"
    jid, password, contact = arguments[:3]
    asyncio.run(main(jid, password, contact, database))
