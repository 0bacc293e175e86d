"""A row that cannot be decoded (issue 10, point 4), forced into the log table past the codec as
an older version could have written it: it is parked with its node's later events behind it, a
retry fails again and says so, export and compaction report it instead of failing, and
``parked drop`` removes it so that its node goes on."""

from __future__ import annotations

import io
import time

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, at, published
from pubsub_cache.events import UndecodableEvent
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.schema import event_table
from pubsub_cache.events.transfer import export_log, read_export
from pubsub_cache.ops.cli import main
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.compact import compact
from pubsub_cache.projector.parking import list_parked
from pubsub_cache.projector.retry import retry_parked
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import pubsub_item, pubsub_node

OTHER = "other-node"


def force_poison(engine: Engine) -> int:
    """Append, past the codec, an item id of 3072 characters; returns its position."""
    body = msgspec.msgpack.encode(
        {
            "type": "items-published",
            "v": 1,
            "account": ACCOUNT,
            "service": SERVICE,
            "node": NODE,
            "observed_at": at(1),
            "source": "notification",
            "items": [{"id": "x" * 3072}],
        }
    )
    row = {"account": ACCOUNT, "service": SERVICE, "node": NODE, "type": "items-published"}
    with write_transaction(engine) as connection:
        result = connection.execute(
            event_table.insert().returning(event_table.c.position),
            {**row, "recorded_at": time.time(), "body": body},
        )
        return int(result.scalar_one())


@pytest.fixture
def poisoned(event_log: EventLog) -> int:
    """A log of: a, <poison>, b (same node), c (another node); returns the poison's position."""
    event_log.append([published("a")])
    position = force_poison(event_log.engine)
    event_log.append([published("b"), published("c", node=OTHER)])
    return position


def items(engine: Engine) -> set[tuple[str, str]]:
    query = sa.select(pubsub_node.c.node, pubsub_item.c.item_id).join_from(
        pubsub_item, pubsub_node, pubsub_item.c.node_id == pubsub_node.c.id
    )
    with engine.connect() as connection:
        return {(row.node, row.item_id) for row in connection.execute(query)}


def parked_rows(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        return [(row.position, row.error) for row in list_parked(connection, "main")]


def project(engine: Engine) -> None:
    projector = Projector(engine, registry=default_registry())
    projector.catch_up()
    projector.release()


def test_an_undecodable_event_is_parked_with_its_node_behind_it_and_others_go_on(
    engine: Engine, poisoned: int
) -> None:
    project(engine)

    assert items(engine) == {(NODE, "a"), (OTHER, "c")}
    [(first, error), (second, waiting)] = parked_rows(engine)
    assert first == poisoned
    assert f"cannot decode the event at position {poisoned}" in error
    assert "length <= 3071" in error
    assert (second, waiting) == (
        poisoned + 1,
        f"waiting behind the parked event at position {poisoned}",
    )


def test_a_parked_retry_that_fails_again_keeps_the_node_parked_and_records_why(
    engine: Engine, poisoned: int
) -> None:
    project(engine)
    with engine.connect() as connection:
        [before, _] = list_parked(connection, "main")

    applied, remaining = retry_parked(engine, default_registry(), "main")

    assert (applied, remaining) == (0, 2)
    with engine.connect() as connection:
        [after, behind] = list_parked(connection, "main")
    assert after.position == poisoned
    assert after.error.startswith("UndecodableEvent: cannot decode the event at position")
    assert after.parked_at >= before.parked_at
    assert behind.position == poisoned + 1  # order kept: b still waits
    assert items(engine) == {(NODE, "a"), (OTHER, "c")}


@pytest.mark.parametrize("fmt", ["ndjson", "msgpack"])
def test_export_reports_an_undecodable_row_and_exports_the_rest(
    event_log: EventLog, poisoned: int, fmt: str
) -> None:
    reported: list[UndecodableEvent] = []
    out = io.BytesIO()

    count = export_log(event_log, out, fmt=fmt, on_undecodable=reported.append)  # type: ignore[arg-type]

    assert count == 3
    assert [error.position for error in reported] == [poisoned]
    out.seek(0)
    exported = list(read_export(out, fmt=fmt))  # type: ignore[arg-type]
    assert [record.position for record in exported] == [1, poisoned + 1, poisoned + 2]


def test_compaction_reports_an_undecodable_row_keeps_it_and_compacts_the_rest(
    engine: Engine, event_log: EventLog, poisoned: int
) -> None:
    project(engine)
    reported: list[UndecodableEvent] = []

    compact(engine, on_undecodable=reported.append)

    assert [error.position for error in reported] == [poisoned]
    assert poisoned in [record.position for record in event_log.read_raw(after=0, limit=10)]


def test_the_cli_reports_the_row_and_parked_drop_lets_the_node_go_on(
    engine: Engine,
    database_url: str,
    poisoned: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    monkeypatch.setenv("PUBSUB_CACHE_DATABASE_URL", database_url)
    project(engine)
    capsys.readouterr()

    assert main(["log", "export", f"{tmp_path}/log.ndjson"]) == 3
    err = capsys.readouterr().err
    assert f"left out: cannot decode the event at position {poisoned}" in err
    assert "exported 3 events" in err

    assert main(["log", "compact"]) == 0
    assert f"kept: cannot decode the event at position {poisoned}" in capsys.readouterr().err

    assert main(["parked", "drop", "--position", str(poisoned), "--force"]) == 0
    assert capsys.readouterr().out.strip() == "dropped 1"
    assert main(["parked", "retry"]) == 0
    assert capsys.readouterr().out.strip() == "applied 1; still parked 0"
    assert items(engine) == {(NODE, "a"), (NODE, "b"), (OTHER, "c")}
