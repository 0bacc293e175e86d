"""The newest N items of a node are read down an index, on both engines: about N rows touched,
never the whole node sorted (issue 12, point 3: items listed by one sync page used to share one
position, and the tie-break made PostgreSQL read and sort the whole page). Each item's content
(payload, parsed JSON: ``pubsub_content``, migration 0010) is then read by its primary key, once
per item returned.

The node is filled the way the daemon fills it: one sync listing, then notifications.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published
from pubsub_cache.events import Item, SyncCompleted, SyncPageFetched, SyncStarted
from pubsub_cache.events.log import EventLog
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node
from pubsub_cache.query.rows import ITEMS as ITEM_SOURCE
from pubsub_cache.query.rows import ORDER_KEYS, item_columns

ITEMS = 3000
LIMIT = 20
COMMON: dict[str, Any] = {"account": ACCOUNT, "service": SERVICE, "node": NODE}


@pytest.fixture
def filled(engine: Engine, event_log: EventLog) -> int:
    """A node of ITEMS items from one sync page and a few notifications; returns its id."""
    listed = [Item(id=f"it{n:05}", payload=f"<p xmlns='urn:t'>{n}</p>") for n in range(ITEMS)]
    event_log.append(
        [
            SyncStarted(**COMMON, observed_at=at(0), sync_id="s", order="creation"),
            SyncPageFetched(**COMMON, observed_at=at(1), sync_id="s", items=listed),
            SyncCompleted(
                **COMMON, observed_at=at(2), sync_id="s", complete=True, item_count=ITEMS
            ),
            published("late-1", "late-2", when=3),
        ]
    )
    Projector(engine, registry=default_registry()).catch_up()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE pubsub_item")
        else:
            connection.exec_driver_sql("ANALYZE")
        node_id: int = connection.execute(sa.select(pubsub_node.c.id)).scalar_one()
    return node_id


def newest(dialect: str, order: str) -> sa.Select[Any]:
    """The shape of the cached read of the newest items (query/cache.py's hot path)."""
    keys = ORDER_KEYS[order]
    return (
        sa.select(*item_columns(dialect))
        .select_from(ITEM_SOURCE)
        .where(pubsub_item.c.node_id == sa.bindparam("node_id"))
        .order_by(*(key.desc() for key in keys))
        .limit(LIMIT)
    )


@pytest.mark.parametrize("order", ["service", "creation", "modification"])
def test_the_newest_items_are_read_down_an_index(engine: Engine, filled: int, order: str) -> None:
    statement = newest(engine.dialect.name, order).params(node_id=filled)
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            plan = " | ".join(row[-1] for row in rows)
            assert f"USING INDEX ix_pubsub_item_node_{order}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort of the node's rows
            assert "SEARCH pubsub_content USING INTEGER PRIMARY KEY" in plan, plan
            return
        text = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").scalar_one()
    plan = (json.loads(text) if isinstance(text, str) else text)[0]["Plan"]
    nodes = list(_walk(plan))
    assert not any(node["Node Type"] in ("Sort", "Incremental Sort") for node in nodes), plan
    scans = [node for node in nodes if "Index" in node["Node Type"]]
    assert scans, plan
    assert scans[0]["Index Name"] == f"ix_pubsub_item_node_{order}"
    assert scans[0]["Actual Rows"] <= LIMIT + 1, plan
    content = [node for node in scans if node.get("Relation Name") == "pubsub_content"]
    assert content, plan  # by its primary key, one row for each item returned
    assert content[0]["Actual Rows"] * content[0]["Actual Loops"] <= LIMIT + 1, plan


def test_the_read_returns_the_newest_in_the_services_order(engine: Engine, filled: int) -> None:
    with engine.connect() as connection:
        ids = list(
            connection.execute(
                newest(engine.dialect.name, "service"), {"node_id": filled}
            ).scalars()
        )
    assert ids[:3] == ["late-2", "late-1", f"it{ITEMS - 1:05}"]


def _walk(plan: dict[str, Any]) -> Any:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _walk(child)
