"""``replay``: blue/green rebuild (invariant 3), interruption, resume, verify, new parsers."""

from __future__ import annotations

import time

import sqlalchemy as sa
from query_helpers import ITEM_ROWS
from sqlalchemy.engine import Engine

from helpers import LoudMicroblog, atom, published, retracted
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import Analyser, AnalyserRegistry, default_registry
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import projector_checkpoint, pubsub_item

MICROBLOG = "urn:xmpp:microblog:0"


def live_digest(engine: Engine) -> str:
    with engine.connect() as connection:
        return read_model_digest(connection)


def fill(event_log: EventLog, engine: Engine, count: int = 40) -> Projector:
    event_log.append(
        [published(str(i), node=MICROBLOG, payload=atom(f"post {i}")) for i in range(count)]
        + [retracted("3", "5", node=MICROBLOG)]
    )
    projector = Projector(engine, registry=default_registry(), batch_size=9)
    projector.catch_up()
    return projector


def test_verify_finds_the_rebuilt_model_identical(engine: Engine, event_log: EventLog) -> None:
    fill(event_log, engine)
    rebuild = Rebuild(engine, default_registry(), batch_size=7)
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    result = rebuild.finish(swap=False, verify=True)
    assert result.identical
    assert result.live_digest == live_digest(engine)
    assert not result.swapped


def test_an_interrupted_rebuild_leaves_the_live_model_untouched_and_resumes(
    engine: Engine, event_log: EventLog
) -> None:
    fill(event_log, engine)
    before = live_digest(engine)
    first = Rebuild(engine, default_registry(), batch_size=10, lease_seconds=0.1)
    first.prepare(fresh=True)
    first._projector.run_once()  # one batch, then the process "dies"
    assert live_digest(engine) == before
    time.sleep(0.15)  # its lease expires
    again = Rebuild(engine, default_registry(), batch_size=10)
    assert again.prepare() == 10  # resumes where the first stopped
    again.catch_up()
    assert again.finish(swap=True, verify=False).swapped
    assert live_digest(engine) == before


def test_the_live_projector_goes_on_after_the_swap(engine: Engine, event_log: EventLog) -> None:
    projector = fill(event_log, engine)
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuilt_up_to = rebuild.catch_up()
    event_log.append([published("late", node=MICROBLOG, payload=atom("late"))])
    result = rebuild.finish(swap=True, verify=False)
    # Both models stood at the same position; the live projector applies what came after.
    assert result.position == rebuilt_up_to == event_log.head() - 1
    event_log.append([published("later", node=MICROBLOG, payload=atom("later"))])
    projector.catch_up()
    with engine.connect() as connection:
        ids = set(connection.execute(sa.select(pubsub_item.c.item_id)).scalars())
        position = connection.execute(
            sa.select(projector_checkpoint.c.position).where(projector_checkpoint.c.name == "main")
        ).scalar()
    assert {"late", "later"} <= ids
    assert "3" not in ids
    assert position == event_log.head()


def test_a_new_parser_version_is_applied_by_replay(engine: Engine, event_log: EventLog) -> None:
    fill(event_log, engine)
    registry = AnalyserRegistry()
    registry.register(
        Analyser(
            name="xep-0277",
            priority=1000,
            node_prefix=MICROBLOG,
            to_sync=True,
            parser=LoudMicroblog(),
            type="blog",
        )
    )
    verify = Rebuild(engine, registry, verify=True)
    verify.prepare(fresh=True)
    verify.catch_up()
    assert not verify.finish(swap=False, verify=True).identical
    rebuild = Rebuild(engine, registry)
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    assert rebuild.finish(swap=True, verify=False).swapped
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(ITEM_ROWS.c.parsed, ITEM_ROWS.c.parser_version).where(
                ITEM_ROWS.c.item_id == "1"
            )
        ).one()
    assert row.parsed["title"] == "POST 1"
    assert row.parser_version == 2


def test_a_dry_run_discards_the_shadow_tables(engine: Engine, event_log: EventLog) -> None:
    fill(event_log, engine)
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    assert rebuild.shadow_digest() == live_digest(engine)
    rebuild.discard()
    assert not any(name.startswith("rebuild_") for name in sa.inspect(engine).get_table_names())


def test_after_a_swap_the_schema_still_matches_the_migrations(
    engine: Engine, event_log: EventLog
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from pubsub_cache.migrations import api

    projector = fill(event_log, engine)
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    assert rebuild.finish(swap=True, verify=False).swapped
    rebuild.clean_up()
    with engine.connect() as connection:
        options = {"compare_type": True, "include_name": api.include_name}
        context = MigrationContext.configure(connection, opts=options)
        assert compare_metadata(context, api.target_metadata()) == []
        names = set(sa.inspect(connection).get_table_names())
        hits = connection.execute(
            sa.text("SELECT count(*) FROM pubsub_item_fts WHERE pubsub_item_fts MATCH 'post'")
            if engine.dialect.name == "sqlite"
            else sa.text(
                "SELECT count(*) FROM pubsub_item "
                "WHERE to_tsvector('simple', coalesce(text, '')) @@ to_tsquery('post')"
            )
        ).scalar()
    assert not any(name.startswith(("retired_", "rebuild_")) for name in names)
    assert hits == 38  # 40 posts, 2 retracted: the search index was rebuilt with the rows
    # The live projector and the search triggers work on the swapped-in tables.
    event_log.append([published("new", node=MICROBLOG, payload=atom("post new"))])
    projector.catch_up()
    with engine.connect() as connection:
        assert "new" in set(connection.execute(sa.select(pubsub_item.c.item_id)).scalars())
