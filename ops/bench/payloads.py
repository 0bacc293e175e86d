"""Sample XEP-0277 payloads and events for benchmarks: deterministic, about 800 bytes each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pubsub_cache.events import Item, ItemsPublished

ATOM_NS = "http://www.w3.org/2005/Atom"
MICROBLOG_NODE = "urn:xmpp:microblog:0"

_WORDS = (
    *("pubsub", "cache", "event", "log", "projector", "replay", "node", "item", "publish"),
    *("retract", "purge", "sync", "roster", "presence", "stanza", "server", "client"),
    *("account", "service", "message"),
)


def atom_entry(index: int, *, author: str = "juliet@capulet.lit") -> str:
    """A realistic XEP-0277 Atom entry of about 800 bytes, different for each ``index``."""
    published = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
    stamp = published.strftime("%Y-%m-%dT%H:%M:%SZ")
    words = " ".join(_WORDS[(index + k) % len(_WORDS)] for k in range(40))
    return (
        f'<entry xmlns="{ATOM_NS}" xml:lang="en">'
        f'<title type="text">Post number {index} about {_WORDS[index % len(_WORDS)]}</title>'
        f'<content type="text">{words}. Entry {index} of the benchmark corpus.</content>'
        f"<author><name>Juliet</name><uri>xmpp:{author}</uri></author>"
        f"<id>tag:capulet.lit,2026:posts-{index}</id>"
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        f'<category term="bench"/><category term="tag{index % 7}"/>'
        f'<link rel="replies" title="comments" href="xmpp:pubsub.capulet.lit'
        f'?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments%2Fpost-{index}"/>'
        "</entry>"
    )


def publish_events(
    count: int,
    *,
    account: str = "romeo@montague.lit",
    service: str = "juliet@capulet.lit",
    node: str = MICROBLOG_NODE,
    start: int = 0,
) -> list[ItemsPublished]:
    """``count`` events, each publishing one Atom entry with item id ``post-N``."""
    observed = datetime(2026, 11, 27, tzinfo=UTC)
    return [
        ItemsPublished(
            account=account,
            service=service,
            node=node,
            observed_at=observed,
            items=[Item(id=f"post-{i}", publisher=service, payload=atom_entry(i))],
        )
        for i in range(start, start + count)
    ]
