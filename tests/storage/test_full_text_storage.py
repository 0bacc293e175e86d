"""The full-text indexes keep only what search reads (migration 0011, issue 12 point 7: disk).

SQLite's FTS5 table holds no token positions and no per-row sizes, and stays consistent with the
items as they come and go. PostgreSQL's GIN index stays close to the size of a fresh build as it
grows item by item: its pending list is capped at 64 kB, where the server's default 4 MB left
that much merged-away space in every index, whatever its number of items.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import SERVICE, retracted
from pubsub_cache.events.db import is_sqlite
from pubsub_cache.events.log import EventLog
from pubsub_cache.ops.bench.payloads import MICROBLOG_NODE, publish_events
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector


def project(engine: Engine) -> None:
    projector = Projector(engine, registry=default_registry(), batch_size=500)
    projector.catch_up()
    projector.release()


def test_sqlite_full_text_keeps_no_positions_and_stays_consistent(
    engine: Engine, event_log: EventLog
) -> None:
    if not is_sqlite(engine):
        pytest.skip("SQLite only: FTS5")
    event_log.append(publish_events(60, service=SERVICE))
    project(engine)
    event_log.append([retracted(*(f"post-{i}" for i in range(0, 60, 3)), node=MICROBLOG_NODE)])
    project(engine)

    with engine.connect() as connection:

        def matches(query: str) -> int:
            sql = "SELECT count(*) FROM pubsub_item_fts WHERE pubsub_item_fts MATCH :query"
            return int(connection.execute(sa.text(sql), {"query": query}).scalar_one())

        # Words in the text column, narrowed by node: what query/search.py asks.
        node_id = connection.exec_driver_sql("SELECT id FROM pubsub_node").scalar_one()
        assert matches(f'node_id : ({node_id}) AND text : ("pubsub" "corpus")') == 40
        assert matches('text : ("number" "7")') == 1
        assert matches('text : ("number" "6")') == 0  # retracted
        # The index and the items agree, after the retractions' deletes too.
        connection.exec_driver_sql(
            "INSERT INTO pubsub_item_fts(pubsub_item_fts) VALUES ('integrity-check')"
        )
        # No positions: a phrase cannot be answered. No per-row sizes: no docsize table.
        with pytest.raises(sa.exc.OperationalError, match="detail"):
            matches('"pubsub cache"')
        tables = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE name LIKE 'pubsub_item_fts%'"
        ).scalars()
        assert "pubsub_item_fts_docsize" not in set(tables)


def test_postgresql_gin_index_stays_near_a_fresh_build_as_items_come(
    engine: Engine, event_log: EventLog
) -> None:
    if is_sqlite(engine):
        pytest.skip("PostgreSQL only: a GIN index")
    for start in range(0, 3_000, 500):
        event_log.append(publish_events(500, service=SERVICE, start=start))
        project(engine)

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:

        def index_bytes() -> int:
            connection.exec_driver_sql("VACUUM pubsub_item")
            sql = "SELECT pg_relation_size('ix_pubsub_item_search')"
            return int(connection.exec_driver_sql(sql).scalar_one())

        grown = index_bytes()
        connection.exec_driver_sql("REINDEX INDEX ix_pubsub_item_search")
        fresh = index_bytes()
    # At the default 4 MB pending list: 2.5 MB here, for 0.4 MB built fresh.
    assert grown <= 1.5 * fresh, (grown, fresh)
