"""The analyser registry: which nodes are synchronised, how their items are parsed, what they are.

Modelled on the analysers of Libervia's pubsub cache. An :class:`Analyser` matches a node by name
prefix, payload namespace and/or a predicate; a node takes the first matching analyser by priority
(ties go to registration order). Third-party packages add analysers through the
``pubsub_cache.analysers`` entry-point group; a broken one is logged and skipped, never fatal.

Nothing is registered at import time: :func:`default_registry` builds a new registry each call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import EntryPoint

from pubsub_cache.errors import PubsubCacheError
from pubsub_cache.projector.parsers import (
    AvatarMetadataParser,
    BookmarksParser,
    GeolocParser,
    MicroblogParser,
    Parser,
    TuneParser,
)
from pubsub_cache.projector.parsers.microblog import ATOM_NS

__all__ = [
    "ENTRY_POINT_GROUP",
    "Analyser",
    "AnalyserRegistry",
    "DuplicateAnalyserError",
    "InvalidAnalyserEntryPointError",
    "NodeInfo",
    "default_registry",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pubsub_cache.analysers"
MICROBLOG_NODE = "urn:xmpp:microblog:0"
MICROBLOG_COMMENTS_PREFIX = "urn:xmpp:microblog:0:comments/"


class DuplicateAnalyserError(PubsubCacheError):
    """Raised when an analyser is registered under a name the registry already holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an analyser named {name!r} is already registered")


class InvalidAnalyserEntryPointError(PubsubCacheError):
    """Raised when an entry point gives neither an Analyser nor a callable returning Analysers."""

    def __init__(self, entry_point: str, got: object) -> None:
        self.entry_point = entry_point
        super().__init__(
            f"entry point {entry_point!r} gave {type(got).__name__}, expected an Analyser, "
            "an iterable of them or a callable returning either"
        )


@dataclass(frozen=True)
class NodeInfo:
    """What is known about a node when choosing its analyser."""

    service: str
    node: str
    namespace: str | None = None
    """The namespace of the node's payload root element, when known."""


@dataclass(frozen=True)
class Analyser:
    """How to treat the nodes it matches; it matches when every criterion it sets holds."""

    name: str
    priority: int = 0
    node_prefix: str | None = None
    namespace: str | None = None
    match: Callable[[NodeInfo], bool] | None = None
    to_sync: bool = False
    parser: Parser | None = None
    type: str | None = None
    subtype: str | None = None
    classify: Callable[[NodeInfo], tuple[str | None, str | None]] | None = None
    """Computes (type, subtype) per node; when unset, ``type`` and ``subtype`` apply as they are."""

    def matches(self, info: NodeInfo) -> bool:
        """Whether every criterion this analyser sets holds for ``info``."""
        if self.node_prefix is not None and not info.node.startswith(self.node_prefix):
            return False
        if self.namespace is not None and info.namespace != self.namespace:
            return False
        return self.match is None or self.match(info)

    def node_type(self, info: NodeInfo) -> tuple[str | None, str | None]:
        """The (type, subtype) of a node this analyser matched."""
        if self.classify is not None:
            return self.classify(info)
        return self.type, self.subtype


class AnalyserRegistry:
    """An ordered set of analysers, first match by priority wins."""

    def __init__(self) -> None:
        self._analysers: list[Analyser] = []

    @property
    def analysers(self) -> tuple[Analyser, ...]:
        """All analysers in match order: priority descending, then registration order."""
        return tuple(self._analysers)

    def register(self, analyser: Analyser) -> None:
        """Add ``analyser``; raise :class:`DuplicateAnalyserError` if its name is taken."""
        if any(existing.name == analyser.name for existing in self._analysers):
            raise DuplicateAnalyserError(analyser.name)
        self._analysers.append(analyser)
        # list.sort is stable, so equal priorities keep their registration order.
        self._analysers.sort(key=lambda a: -a.priority)

    def match(self, info: NodeInfo) -> Analyser | None:
        """The analyser for a node, or ``None`` when none matches."""
        for analyser in self._analysers:
            if analyser.matches(info):
                return analyser
        return None

    def parser_for(self, name: str) -> Parser | None:
        """The parser with this ``name`` among the registered analysers' parsers."""
        for analyser in self._analysers:
            if analyser.parser is not None and analyser.parser.name == name:
                return analyser.parser
        return None

    def load_entry_points(
        self,
        group: str = ENTRY_POINT_GROUP,
        *,
        candidates: Iterable[EntryPoint] | None = None,
    ) -> list[Analyser]:
        """Register the analysers third-party packages declare in ``group``; return those added.

        An entry point may name an :class:`Analyser`, or a callable returning one or an iterable
        of them. One that fails to load, gives anything else, or clashes by name is logged with its
        name and skipped whole. ``candidates`` replaces discovery (for tests and embedding).
        """
        found = metadata.entry_points(group=group) if candidates is None else candidates
        added: list[Analyser] = []
        for entry_point in found:
            try:
                analysers = _analysers_from(entry_point)
                taken = {existing.name for existing in self._analysers}
                for analyser in analysers:
                    if analyser.name in taken:
                        raise DuplicateAnalyserError(analyser.name)
                    taken.add(analyser.name)
            except Exception:
                # Third-party code can fail in any way; the projector must go on without it.
                log.exception("skipping analyser entry point %r (%s)", entry_point.name, group)
                continue
            for analyser in analysers:
                self.register(analyser)
                added.append(analyser)
        return added


def _analysers_from(entry_point: EntryPoint) -> list[Analyser]:
    obj = entry_point.load()
    if isinstance(obj, Analyser):
        return [obj]
    if not callable(obj):
        raise InvalidAnalyserEntryPointError(entry_point.name, obj)
    result = obj()
    if isinstance(result, Analyser):
        return [result]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes):
        analysers = list(result)
        if all(isinstance(item, Analyser) for item in analysers):
            return analysers
    raise InvalidAnalyserEntryPointError(entry_point.name, result)


def _classify_microblog(info: NodeInfo) -> tuple[str | None, str | None]:
    if info.node.startswith(MICROBLOG_COMMENTS_PREFIX):
        return "blog", "comment"
    return "blog", None


def default_registry(*, entry_points: bool = True) -> AnalyserRegistry:
    """A new registry holding the built-in analysers, plus the installed third-party ones."""
    atom = MicroblogParser()
    registry = AnalyserRegistry()
    for analyser in (
        Analyser(
            name="xep-0277",
            priority=1000,
            node_prefix=MICROBLOG_NODE,
            to_sync=True,
            parser=atom,
            type="blog",
            classify=_classify_microblog,
        ),
        Analyser(
            name="xep-0084",
            priority=1000,
            node_prefix="urn:xmpp:avatar:metadata",
            to_sync=True,
            parser=AvatarMetadataParser(),
            type="avatar",
        ),
        # Geoloc, tune and bookmarks change often or are private to the account and are pushed
        # by PEP anyway: caching them on notification is enough, no full sync.
        Analyser(
            name="xep-0080",
            priority=1000,
            node_prefix="http://jabber.org/protocol/geoloc",
            parser=GeolocParser(),
            type="geoloc",
        ),
        Analyser(
            name="xep-0118",
            priority=1000,
            node_prefix="http://jabber.org/protocol/tune",
            parser=TuneParser(),
            type="tune",
        ),
        Analyser(
            name="xep-0402",
            priority=1000,
            node_prefix="urn:xmpp:bookmarks:1",
            parser=BookmarksParser(),
            type="bookmarks",
        ),
        # Atom published on any other node (news feeds on a pubsub component).
        Analyser(name="atom", priority=100, namespace=ATOM_NS, parser=atom, type="blog"),
    ):
        registry.register(analyser)
    if entry_points:
        registry.load_entry_points()
    return registry
