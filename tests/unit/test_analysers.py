"""The analyser registry: matching, priority, built-ins and third-party entry points."""

from __future__ import annotations

import logging
from importlib import metadata
from importlib.metadata import EntryPoint

import pytest

from pubsub_cache.projector import analysers
from pubsub_cache.projector.analysers import (
    ENTRY_POINT_GROUP,
    Analyser,
    AnalyserRegistry,
    DuplicateAnalyserError,
    NodeInfo,
    default_registry,
)
from pubsub_cache.projector.parsers import MicroblogParser, TuneParser
from pubsub_cache.projector.parsers.microblog import ATOM_NS

SERVICE = "pubsub.example.org"

# Module-level objects the test entry points below point at.
PLUGIN_ANALYSER = Analyser(name="plugin-events", priority=500, node_prefix="urn:example:events")


def plugin_factory() -> Analyser:
    return Analyser(name="plugin-factory", node_prefix="urn:example:factory")


def plugin_many() -> list[Analyser]:
    return [
        Analyser(name="plugin-many-1", node_prefix="urn:example:many1"),
        Analyser(name="plugin-many-2", node_prefix="urn:example:many2"),
    ]


def plugin_raises() -> Analyser:
    raise RuntimeError("plugin bug")


def plugin_wrong_type() -> object:
    return {"name": "not an analyser"}


def plugin_half_wrong() -> list[object]:
    return [Analyser(name="plugin-half"), "junk"]


PLUGIN_NOT_CALLABLE = 42
PLUGIN_DUPLICATE = Analyser(name="xep-0277", priority=10_000, node_prefix="urn:xmpp:microblog:0")


def entry_point(name: str, attribute: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{attribute}", group=ENTRY_POINT_GROUP)


@pytest.fixture
def registry() -> AnalyserRegistry:
    return default_registry(entry_points=False)


def node(name: str, namespace: str | None = None) -> NodeInfo:
    return NodeInfo(service=SERVICE, node=name, namespace=namespace)


def matched_name(registry: AnalyserRegistry, info: NodeInfo) -> str | None:
    analyser = registry.match(info)
    return None if analyser is None else analyser.name


def test_microblog_node_is_synced_blog_with_atom_parser(registry: AnalyserRegistry) -> None:
    info = node("urn:xmpp:microblog:0")
    analyser = registry.match(info)
    assert analyser is not None
    assert analyser.name == "xep-0277"
    assert analyser.to_sync is True
    assert isinstance(analyser.parser, MicroblogParser)
    assert analyser.node_type(info) == ("blog", None)


def test_microblog_comments_node_gets_comment_subtype(registry: AnalyserRegistry) -> None:
    info = node("urn:xmpp:microblog:0:comments/dd88c9bc58886fce0049ed050df0c5f2")
    analyser = registry.match(info)
    assert analyser is not None
    assert analyser.name == "xep-0277"
    assert analyser.node_type(info) == ("blog", "comment")


@pytest.mark.parametrize(
    ("node_name", "name", "to_sync", "node_type"),
    [
        ("urn:xmpp:avatar:metadata", "xep-0084", True, "avatar"),
        ("http://jabber.org/protocol/geoloc", "xep-0080", False, "geoloc"),
        ("http://jabber.org/protocol/tune", "xep-0118", False, "tune"),
        ("urn:xmpp:bookmarks:1", "xep-0402", False, "bookmarks"),
    ],
)
def test_pep_nodes_match_their_builtin_analyser(
    registry: AnalyserRegistry, node_name: str, name: str, to_sync: bool, node_type: str
) -> None:
    info = node(node_name)
    analyser = registry.match(info)
    assert analyser is not None
    assert analyser.name == name
    assert analyser.to_sync is to_sync
    assert analyser.parser is not None
    assert analyser.parser.namespace == node_name
    assert analyser.node_type(info) == (node_type, None)


def test_atom_payload_on_any_node_matches_the_generic_analyser(registry: AnalyserRegistry) -> None:
    analyser = registry.match(node("news/releases", namespace=ATOM_NS))
    assert analyser is not None
    assert (analyser.name, analyser.to_sync, analyser.type) == ("atom", False, "blog")
    assert analyser.parser is registry.parser_for("xep-0277")


def test_unknown_node_or_unknown_namespace_matches_nothing(registry: AnalyserRegistry) -> None:
    assert registry.match(node("news/releases")) is None
    assert registry.match(node("news/releases", namespace="urn:example:other")) is None


def test_specific_node_analyser_beats_generic_namespace_one(registry: AnalyserRegistry) -> None:
    analyser = registry.match(node("urn:xmpp:microblog:0", namespace=ATOM_NS))
    assert analyser is not None
    assert analyser.name == "xep-0277"


def test_higher_priority_wins_whatever_the_registration_order() -> None:
    registry = AnalyserRegistry()
    registry.register(Analyser(name="low", priority=1, node_prefix="urn:example"))
    registry.register(Analyser(name="high", priority=9, node_prefix="urn:example:x"))
    registry.register(Analyser(name="mid", priority=5))
    assert [a.name for a in registry.analysers] == ["high", "mid", "low"]
    assert registry.match(node("urn:example:x:1")) == registry.analysers[0]
    assert matched_name(registry, node("urn:example:y")) == "mid"


def test_equal_priorities_keep_registration_order() -> None:
    registry = AnalyserRegistry()
    for name in ("first", "second", "third"):
        registry.register(Analyser(name=name, priority=3))
    assert [a.name for a in registry.analysers] == ["first", "second", "third"]
    assert matched_name(registry, node("anything")) == "first"


def test_every_criterion_set_must_hold() -> None:
    analyser = Analyser(
        name="strict",
        node_prefix="urn:example:",
        namespace="urn:example:payload",
        match=lambda info: info.service.startswith("pubsub."),
    )
    assert analyser.matches(node("urn:example:a", "urn:example:payload"))
    assert not analyser.matches(node("other", "urn:example:payload"))
    assert not analyser.matches(node("urn:example:a", "urn:example:else"))
    assert not analyser.matches(node("urn:example:a", None))
    assert not analyser.matches(
        NodeInfo("juliet@capulet.lit", "urn:example:a", "urn:example:payload")
    )


def test_callable_alone_can_match() -> None:
    registry = AnalyserRegistry()
    registry.register(Analyser(name="by-service", match=lambda info: info.service == SERVICE))
    assert registry.match(node("whatever")) is not None
    assert registry.match(NodeInfo("elsewhere.example", "whatever")) is None


def test_classify_hook_overrides_static_type() -> None:
    analyser = Analyser(
        name="x", type="static", subtype="static", classify=lambda info: ("dynamic", info.node)
    )
    assert analyser.node_type(node("n1")) == ("dynamic", "n1")
    assert Analyser(name="y", type="t", subtype="s").node_type(node("n1")) == ("t", "s")


def test_registering_a_taken_name_raises(registry: AnalyserRegistry) -> None:
    with pytest.raises(DuplicateAnalyserError, match="xep-0277"):
        registry.register(Analyser(name="xep-0277"))


def test_parser_for_finds_builtin_parsers_by_name(registry: AnalyserRegistry) -> None:
    assert isinstance(registry.parser_for("xep-0118"), TuneParser)
    assert registry.parser_for("xep-9999") is None


def test_default_registry_is_new_each_time() -> None:
    first = default_registry(entry_points=False)
    first.register(Analyser(name="local"))
    assert "local" not in [a.name for a in default_registry(entry_points=False).analysers]


def test_entry_points_load_analysers_factories_and_iterables() -> None:
    registry = AnalyserRegistry()
    added = registry.load_entry_points(
        candidates=[
            entry_point("events", "PLUGIN_ANALYSER"),
            entry_point("factory", "plugin_factory"),
            entry_point("many", "plugin_many"),
        ]
    )
    assert [a.name for a in added] == [
        "plugin-events",
        "plugin-factory",
        "plugin-many-1",
        "plugin-many-2",
    ]
    assert registry.match(node("urn:example:events:1")) is PLUGIN_ANALYSER
    assert matched_name(registry, node("urn:example:many2")) == "plugin-many-2"


@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("missing-attribute", "NO_SUCH_OBJECT"),
        ("raises", "plugin_raises"),
        ("wrong-type", "plugin_wrong_type"),
        ("half-wrong", "plugin_half_wrong"),
        ("not-callable", "PLUGIN_NOT_CALLABLE"),
        ("duplicate", "PLUGIN_DUPLICATE"),
    ],
)
def test_broken_entry_point_is_logged_by_name_and_skipped(
    caplog: pytest.LogCaptureFixture, name: str, attribute: str
) -> None:
    registry = default_registry(entry_points=False)
    before = registry.analysers
    with caplog.at_level(logging.ERROR, logger=analysers.__name__):
        added = registry.load_entry_points(
            candidates=[entry_point(name, attribute), entry_point("good", "PLUGIN_ANALYSER")]
        )
    assert [a.name for a in added] == ["plugin-events"]
    assert [a for a in registry.analysers if a.name != "plugin-events"] == list(before)
    assert any(name in record.getMessage() for record in caplog.records)


def test_entry_point_of_a_missing_module_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    registry = AnalyserRegistry()
    broken = EntryPoint(name="gone", value="no_such_module_4f1d:thing", group=ENTRY_POINT_GROUP)
    with caplog.at_level(logging.ERROR, logger=analysers.__name__):
        assert registry.load_entry_points(candidates=[broken]) == []
    assert "gone" in caplog.text
    assert registry.analysers == ()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace entry-point discovery; record the groups asked for."""
    asked: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return [entry_point("events", "PLUGIN_ANALYSER")]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    return asked


def test_default_registry_loads_installed_entry_points(installed: list[str]) -> None:
    registry = default_registry()
    assert installed == [ENTRY_POINT_GROUP]
    assert registry.match(node("urn:example:events")) is PLUGIN_ANALYSER


def test_default_registry_can_skip_entry_points(installed: list[str]) -> None:
    registry = default_registry(entry_points=False)
    assert installed == []
    assert registry.match(node("urn:example:events")) is None
