"""XEP-0107 User Mood for pubsub-cache: an analyser and its parser, in a package of their own.

``pubsub-cache`` finds :func:`analysers` through the entry point this package declares
(``pyproject.toml``); from then on, items published on a contact's mood node are stored with
``parsed = {"mood": "happy", "text": "..."}``, their text is searchable, and the node's type is
``mood``. A parser is any object with ``name``, ``version``, ``namespace`` and ``parse`` (the
``Parser`` protocol of ``pubsub_cache.projector.parsers``).
"""

from __future__ import annotations

from lxml import etree

from pubsub_cache.projector.analysers import Analyser
from pubsub_cache.projector.parsers import ParsedPayload
from pubsub_cache.projector.xmlsafe import PayloadParseError

MOOD_NS = "http://jabber.org/protocol/mood"


class MoodParser:
    """``<mood><happy/><text>...</text></mood>``: the mood's element name and its text."""

    name = "example-mood"
    version = 1  # raise it when the output changes, then replay (README, analysers)
    namespace = MOOD_NS

    def parse(self, element: etree._Element) -> ParsedPayload:
        """The mood (``None`` when the user cleared it) and the optional free text."""
        if element.tag != f"{{{MOOD_NS}}}mood":
            raise PayloadParseError("unexpected-root", f"expected a mood, got {element.tag!r}")
        mood, text = None, ""
        for child in element.iterchildren(etree.Element):
            local = etree.QName(child).localname
            if local == "text":
                text = (child.text or "").strip()
            elif mood is None:
                mood = local
        return ParsedPayload(data={"mood": mood, "text": text or None}, text=text)


def analysers() -> list[Analyser]:
    """The analysers this package adds: PEP mood nodes, cached as they are notified."""
    return [Analyser(name="example-mood", node_prefix=MOOD_NS, parser=MoodParser(), type="mood")]
