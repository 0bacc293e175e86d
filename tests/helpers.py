"""Builders shared by the tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pubsub_cache.events import Item, ItemsPublished, ItemsRetracted, NodePurged
from pubsub_cache.projector.parsers import MicroblogParser, ParsedPayload

ACCOUNT = "romeo@montague.lit"
SERVICE = "pubsub.capulet.lit"
NODE = "princely_musings"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """A fixed instant ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def published(
    *item_ids: str,
    node: str = NODE,
    service: str = SERVICE,
    account: str = ACCOUNT,
    payload: str | None = "<entry xmlns='http://www.w3.org/2005/Atom'><title>hi</title></entry>",
    when: float = 0,
) -> ItemsPublished:
    """An ItemsPublished event for ``item_ids``."""
    return ItemsPublished(
        account=account,
        service=service,
        node=node,
        observed_at=at(when),
        items=[Item(id=item_id, publisher=service, payload=payload) for item_id in item_ids],
    )


def retracted(
    *item_ids: str, node: str = NODE, when: float = 0, account: str = ACCOUNT
) -> ItemsRetracted:
    """An ItemsRetracted event for ``item_ids``."""
    return ItemsRetracted(
        account=account, service=SERVICE, node=node, observed_at=at(when), item_ids=list(item_ids)
    )


def purged(node: str = NODE, when: float = 0, account: str = ACCOUNT) -> NodePurged:
    """A NodePurged event."""
    return NodePurged(account=account, service=SERVICE, node=node, observed_at=at(when))


def atom(title: str, *, published: str | None = None) -> str:
    """A small XEP-0277 Atom entry."""
    stamp = f"<published>{published}</published>" if published else ""
    return (
        "<entry xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>{title}</title><content>{title} body</content>{stamp}</entry>"
    )


class LoudMicroblog(MicroblogParser):
    """A "version 2" parser: titles in capitals."""

    version = 2

    def parse(self, element: object) -> ParsedPayload:
        parsed = super().parse(element)  # type: ignore[arg-type]
        data = dict(parsed.data, title=(parsed.data["title"] or "").upper())
        return ParsedPayload(data=data, text=parsed.text, published=parsed.published)
