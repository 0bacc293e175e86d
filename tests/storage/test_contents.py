"""Payloads are stored once per distinct content (``pubsub_content``, issue 13 point 6): the views
of one public node share them, a content goes when the last item referencing it goes, and on
PostgreSQL a collection racing a writer never leaves an item pointing at a deleted content
(projector/contents.py)."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Connection, Engine

from helpers import ACCOUNT, LoudMicroblog, atom, published, retracted
from pubsub_cache.events.db import is_sqlite
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, default_registry
from pubsub_cache.projector.compact import sweep_contents
from pubsub_cache.projector.contents import Content, ContentStore
from pubsub_cache.projector.parsers import MicroblogParser
from pubsub_cache.projector.payloads import content_digest
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node

BLOG = "urn:xmpp:microblog:0"
OTHER = "mercutio@verona.lit"


def project(engine: Engine, registry: AnalyserRegistry | None = None) -> None:
    projector = Projector(engine, registry=registry or default_registry())
    projector.catch_up()
    projector.release()


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def contents(engine: Engine) -> dict[int, str]:
    """Every content row: id to payload."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(pubsub_content.c.id, pubsub_content.c.payload))
        return {int(row.id): row.payload for row in rows}


def views(engine: Engine) -> dict[tuple[str, str], int | None]:
    """(account, item id) to the item's content id."""
    query = sa.select(pubsub_node.c.account, pubsub_item.c.item_id, pubsub_item.c.content_id).join(
        pubsub_node, pubsub_node.c.id == pubsub_item.c.node_id
    )
    with engine.connect() as connection:
        return {(row[0], row[1]): row[2] for row in connection.execute(query)}


def test_the_views_of_two_accounts_share_one_content_per_payload(
    engine: Engine, event_log: EventLog
) -> None:
    for account in (ACCOUNT, OTHER):
        event_log.append(
            [
                published("a", node=BLOG, account=account, payload=atom("first")),
                published("b", node=BLOG, account=account, payload=atom("second")),
            ]
        )
    project(engine)
    held = views(engine)
    assert len(held) == 4
    assert held[(ACCOUNT, "a")] == held[(OTHER, "a")]
    assert held[(ACCOUNT, "b")] == held[(OTHER, "b")]
    assert sorted(contents(engine).values()) == sorted([atom("first"), atom("second")])
    with engine.connect() as connection:  # each view reads its parse through the content
        rows = connection.execute(
            sa.select(pubsub_node.c.account, ITEM_ROWS.c.item_id, ITEM_ROWS.c.parsed).join(
                pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id
            )
        ).all()
    titles = {(row[0], row[1]): _decoded(row[2])["title"] for row in rows}
    assert titles == {
        (ACCOUNT, "a"): "first",
        (ACCOUNT, "b"): "second",
        (OTHER, "a"): "first",
        (OTHER, "b"): "second",
    }

    # A retraction in one view keeps the content for the other.
    event_log.append([retracted("a", node=BLOG, account=ACCOUNT)])
    project(engine)
    assert (ACCOUNT, "a") not in views(engine)
    assert sorted(contents(engine).values()) == sorted([atom("first"), atom("second")])

    # The last reference gone, the content goes.
    event_log.append([retracted("a", node=BLOG, account=OTHER)])
    project(engine)
    assert list(contents(engine).values()) == [atom("second")]


def test_a_changed_payload_gets_a_new_content_and_the_old_one_is_collected(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("a", node=BLOG, payload=atom("first"))])
    project(engine)
    before = views(engine)[(ACCOUNT, "a")]
    event_log.append([published("a", node=BLOG, payload=atom("changed"))])
    project(engine)
    after = views(engine)[(ACCOUNT, "a")]
    assert after != before
    assert contents(engine) == {after: atom("changed")}


def test_a_payload_published_then_changed_in_one_batch_leaves_no_content_behind(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append(
        [
            published("a", node=BLOG, payload=atom("first")),
            published("a", node=BLOG, payload=atom("changed")),
            published("b", node=BLOG, payload=atom("gone")),
            retracted("b", node=BLOG),
        ]
    )
    project(engine)
    assert list(contents(engine).values()) == [atom("changed")]


def test_log_compact_sweeps_the_contents_a_nodes_cascade_left(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published(f"i{n}", node=BLOG, payload=atom(f"t{n}")) for n in range(5)])
    project(engine)
    assert len(contents(engine)) == 5
    with engine.begin() as connection:  # outside the projector: a node's cascade
        connection.execute(pubsub_node.delete())
    assert len(contents(engine)) == 5
    assert sweep_contents(engine) == 5  # what `log compact` sweeps
    assert contents(engine) == {}


class OtherMicroblog(MicroblogParser):
    """Another parser name, at the same version."""

    name = "other-microblog"


def test_one_payload_read_by_other_parsers_or_versions_gets_a_content_each(
    engine: Engine, event_log: EventLog
) -> None:
    registry = AnalyserRegistry()
    for name, prefix, parser in (
        ("v1", "v1:", MicroblogParser()),
        ("v2", "v2:", LoudMicroblog()),
        ("other", "other:", OtherMicroblog()),
    ):
        registry.register(
            Analyser(name=name, priority=1000, node_prefix=prefix, to_sync=True, parser=parser)
        )
    payload = atom("same")
    nodes = ("v1:blog", "v2:blog", "other:blog", "unparsed")
    event_log.append([published("a", node=node, payload=payload) for node in nodes])
    project(engine, registry)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(ITEM_ROWS.c.parser, ITEM_ROWS.c.parser_version, ITEM_ROWS.c.payload).order_by(
                ITEM_ROWS.c.parser, ITEM_ROWS.c.parser_version
            )
        ).all()
    found = sorted((tuple(row) for row in rows), key=repr)
    assert found == sorted(
        [
            ("xep-0277", 1, payload),
            ("xep-0277", 2, payload),
            ("other-microblog", 1, payload),
            (None, None, payload),
        ],
        key=repr,
    )
    assert len(contents(engine)) == 4


def test_the_digest_separates_its_parts() -> None:
    assert content_digest("ab", "c", 1) != content_digest("b", "ca", 1)
    assert content_digest("x", None, None) != content_digest("x", "", None)
    assert content_digest("x", "p", 1) != content_digest("x", "p", 2)
    assert content_digest("x", "p", 1) == content_digest("x", "p", 1)


def test_migration_0010_names_the_contents_it_converts_as_the_projector_does() -> None:
    # Revision scripts import nothing from the app, so 0010 holds its own copy: a row it
    # converted must be found again when the same payload is published after the upgrade.
    migration: Any = importlib.import_module(
        "pubsub_cache.migrations.versions.0010_content_addressed_payloads"
    )
    for payload, parser, version in [
        (atom("t"), "microblog", 1),
        ("<x xmlns='urn:t'>\udcff</x>", None, None),
        ("", "", 0),
    ]:
        assert migration._digest(payload, parser, version) == content_digest(
            payload, parser, version
        )


# --- PostgreSQL: a collection racing a writer --------------------------------------------------


def _content(title: str) -> tuple[bytes, Content]:
    payload = atom(title)
    return content_digest(payload, "test", 1), Content("test", 1, None, None, payload)


def _node(connection: Connection, account: str) -> int:
    return int(
        connection.execute(
            pubsub_node.insert()
            .values(
                account=account,
                service="pubsub.capulet.lit",
                node=BLOG,
                analyser="test",
                created_position=1,
                updated_position=1,
                updated_at=0.0,
            )
            .returning(pubsub_node.c.id)
        ).scalar_one()
    )


def _item(connection: Connection, node_id: int, content_id: int) -> None:
    connection.execute(
        pubsub_item.insert().values(
            node_id=node_id,
            item_id="a",
            content_id=content_id,
            published_at=0.0,
            created_at=0.0,
            updated_at=0.0,
            created_position=1,
            updated_position=1,
        )
    )


def _dangling(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.exec_driver_sql(
                "SELECT count(*) FROM pubsub_item AS i LEFT JOIN pubsub_content AS c "
                "ON c.id = i.content_id WHERE i.content_id IS NOT NULL AND c.id IS NULL"
            ).scalar_one()
        )


def _waiting_on_a_lock(engine: Engine, pid: int) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.exec_driver_sql(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).scalar()
        )


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.01)


@pytest.fixture
def shared(engine: Engine) -> tuple[bytes, Content, int, int, int]:
    """PostgreSQL: a content held by one item of the first account's view; the second
    account's node, empty. (digest, content, content id, first node, second node)"""
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: SQLite has one writer")
    digest, content = _content("shared")
    with engine.begin() as connection:
        first, second = _node(connection, ACCOUNT), _node(connection, OTHER)
        content_id = ContentStore(connection, pubsub_content).ids({digest: content})[digest]
        _item(connection, first, content_id)
    return digest, content, content_id, first, second


def _release_and_collect(connection: Connection, node_id: int, content_id: int) -> int:
    """What a batch does when the last item it knows of a content goes."""
    connection.execute(pubsub_item.delete().where(pubsub_item.c.node_id == node_id))
    return ContentStore(connection, pubsub_content).collect(pubsub_item, [content_id])


def test_a_collection_skips_a_content_a_writer_holds(
    engine: Engine, shared: tuple[bytes, Content, int, int, int]
) -> None:
    digest, content, content_id, first, second = shared
    with engine.connect() as writer, engine.connect() as collector, writer.begin():
        found = ContentStore(writer, pubsub_content).ids({digest: content})
        assert found == {digest: content_id}
        _item(writer, second, content_id)  # not committed yet: the collector cannot see it
        with collector.begin():
            assert _release_and_collect(collector, first, content_id) == 0
    assert contents(engine) == {content_id: content.payload}
    assert _dangling(engine) == 0


def test_a_writer_waits_for_a_collection_that_holds_its_content_and_writes_it_again(
    engine: Engine, shared: tuple[bytes, Content, int, int, int]
) -> None:
    digest, content, content_id, first, second = shared
    inserted = threading.Event()
    results: dict[str, Any] = {}

    class Paused(ContentStore):
        """Stops between its insert and its lookup: where a collection can come in."""

        def _lookup(self, digests: list[bytes]) -> dict[bytes, int]:
            if not inserted.is_set():
                inserted.set()
                _until(lambda: "collecting" in results)
            return super()._lookup(digests)

    def write() -> None:
        with engine.connect() as writer, writer.begin():
            results["pid"] = writer.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            found = Paused(writer, pubsub_content).ids({digest: content})
            _item(writer, second, found[digest])
            results["written"] = found[digest]

    thread = threading.Thread(target=write)
    with engine.connect() as collector:
        with collector.begin():
            thread.start()
            assert inserted.wait(10)  # the writer found the row there (its insert did nothing)
            assert _release_and_collect(collector, first, content_id) == 1
            results["collecting"] = True
            # The writer's lookup waits for this transaction (FOR KEY SHARE on a row deleted).
            _until(lambda: _waiting_on_a_lock(engine, results["pid"]))
        thread.join(10)
    assert not thread.is_alive()
    assert results["written"] != content_id  # inserted again
    assert contents(engine) == {results["written"]: content.payload}
    assert _dangling(engine) == 0
