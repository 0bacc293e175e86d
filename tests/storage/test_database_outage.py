"""The daemon's database work rides out a PostgreSQL outage (issue 10, point 3).

Each test puts a real PostgreSQL behind a proxy it controls (tests/pg_proxy.py), takes the
database away while the code under test is idle or busy, and brings it back: nothing crashes,
nothing is lost or parked, each component says once that the database is gone and once that it
is back. SQLite has no outage of this kind, so these run on PostgreSQL only (and must in CI).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator

import anyio
import pytest
import sqlalchemy as sa
from lxml import etree
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, NODE, SERVICE, published
from pg_proxy import ProxiedDatabase, proxied_postgres
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.outage import UNAVAILABLE
from pubsub_cache.ops.metrics import serve_metrics
from pubsub_cache.projector.analysers import Analyser, default_registry
from pubsub_cache.projector.parsers import ParsedPayload
from pubsub_cache.projector.runner import Projector
from pubsub_cache.projector.schema import parked_event, projector_checkpoint
from pubsub_cache.xmpp.backoff import Backoff
from pubsub_cache.xmpp.writer import EventWriter
from tests_support import scrape
from xmpp_fixtures import cached_items, eventually

pytestmark = pytest.mark.anyio

GONE = "database unavailable"
BACK = "database back"


@pytest.fixture
def db() -> Iterator[ProxiedDatabase]:
    """A migrated PostgreSQL scratch database behind a proxy the test controls."""
    with proxied_postgres() as database:
        yield database


def said(caplog: pytest.LogCaptureFixture, logger: str, words: str) -> int:
    """How many records of ``logger`` contain ``words``."""
    return sum(r.name == logger and words in r.getMessage() for r in caplog.records)


def caught_up(engine: Engine) -> bool:
    """Whether the main checkpoint is at the log's head (and there is something in the log)."""
    with engine.connect() as connection:
        position = connection.execute(
            sa.select(projector_checkpoint.c.position).where(projector_checkpoint.c.name == "main")
        ).scalar()
    head = EventLog(engine).head()
    return head > 0 and position == head


def parked_count(engine: Engine) -> int:
    """Events parked by any projector."""
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(parked_event)).scalar_one()


def items(engine: Engine) -> set[str]:
    """The item ids of the test node in the read model."""
    return set(cached_items(engine, ACCOUNT, SERVICE, NODE))


async def test_an_idle_projector_rides_out_an_outage_and_projects_what_comes_after(
    db: ProxiedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub_cache.projector.runner")
    log = EventLog(db.direct)  # another process's appends: the outage is the projector's alone
    projector = Projector(db.engine, registry=default_registry())
    log.append([published("before")])
    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            await group.start(functools.partial(projector.run, idle_timeout=0.25))
        assert caught_up(db.direct)

        db.proxy.go_down()  # idle: waiting for new events on its LISTEN connection
        await eventually(lambda: db.proxy.refused >= 3)  # it came back for more, and failed
        log.append([published("during")])
        db.proxy.come_back()
        log.append([published("after")])

        await eventually(lambda: caught_up(db.direct), timeout=20)
        group.cancel_scope.cancel()

    assert items(db.direct) == {"before", "during", "after"}
    assert said(caplog, "pubsub_cache.projector.runner", GONE) == 1
    assert said(caplog, "pubsub_cache.projector.runner", BACK) == 1


class HoldingParser:
    """Parses ``urn:test:hold`` payloads; the first call holds its batch in flight (inside the
    projector's open transaction) until the test lets it go."""

    name = "test-hold"
    version = 1
    namespace = "urn:test:hold"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def parse(self, element: etree._Element) -> ParsedPayload:
        if not self.entered.is_set():
            self.entered.set()
            self.go_on.wait(timeout=30)
        return ParsedPayload(data={"n": element.text}, text=element.text or "")


async def test_a_batch_in_flight_when_the_database_goes_is_applied_once_it_is_back(
    db: ProxiedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub_cache.projector.runner")
    parser = HoldingParser()
    registry = default_registry(entry_points=False)
    registry.register(
        Analyser(name="hold", priority=100, namespace=parser.namespace, parser=parser)
    )
    log = EventLog(db.direct)
    payload = "<p xmlns='urn:test:hold'>{}</p>"
    log.append([published(f"i{n}", payload=payload.format(n)) for n in range(200)])
    projector = Projector(db.engine, registry=registry, batch_size=1000)

    async with anyio.create_task_group() as group:
        group.start_soon(projector.run)
        await eventually(parser.entered.is_set)
        db.proxy.go_down()  # the batch's connection is cut under it
        parser.go_on.set()
        await eventually(lambda: db.proxy.refused >= 2)
        db.proxy.come_back()

        await eventually(lambda: caught_up(db.direct), timeout=20)
        group.cancel_scope.cancel()

    assert items(db.direct) == {f"i{n}" for n in range(200)}
    assert parked_count(db.direct) == 0  # an outage is never the events' fault
    assert said(caplog, "pubsub_cache.projector.runner", GONE) == 1
    assert said(caplog, "pubsub_cache.projector.runner", BACK) == 1


def logged_ids(engine: Engine) -> list[str]:
    """The item ids of every ItemsPublished in the log, in log order."""
    return [
        item.id
        for record in EventLog(engine).read(after=0)
        for item in getattr(record.event, "items", [])
    ]


async def test_the_writer_keeps_what_arrives_during_an_outage_and_appends_it_in_order(
    db: ProxiedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub_cache.xmpp.writer")
    log = EventLog(db.engine)
    writer = EventWriter(log, retry=Backoff(initial=0.05, cap=0.5))
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        writer.submit([published("a")])
        await writer.flush()

        db.proxy.go_down()
        writer.submit([published("b")])
        await eventually(lambda: db.proxy.refused >= 3)
        writer.submit([published("c")])
        db.proxy.come_back()
        with anyio.fail_after(10):
            await writer.flush()
        group.cancel_scope.cancel()
    log.close()

    assert logged_ids(db.direct) == ["a", "b", "c"]
    assert said(caplog, "pubsub_cache.xmpp.writer", GONE) == 1
    assert said(caplog, "pubsub_cache.xmpp.writer", BACK) == 1


async def test_stopping_the_writer_during_an_outage_does_not_wait_for_the_database(
    db: ProxiedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    # A stop must be prompt whatever the outage's length: one last attempt, no retries for the
    # whole shutdown_timeout (what is lost is said, and its nodes are re-read at next start).
    writer = EventWriter(EventLog(db.engine), retry=Backoff(initial=0.05, cap=0.5))
    db.proxy.go_down()
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        writer.submit([published("lost")])
        await eventually(lambda: db.proxy.refused >= 2)
        refused_before_stop = db.proxy.refused
        group.cancel_scope.cancel()

    assert db.proxy.refused - refused_before_stop <= 1
    assert "1 events not appended" in caplog.text


async def answer_of(port: int) -> str:
    """The metrics endpoint's whole answer: status line, headers and body."""
    head, body = await scrape(port)
    return f"{head}\r\n\r\n{body}"


async def test_metrics_answer_503_while_the_database_is_away_and_do_not_stop(
    db: ProxiedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub_cache.ops.metrics")
    async with anyio.create_task_group() as group:
        port = await group.start(serve_metrics, db.engine, 0)
        assert (await answer_of(port)).startswith("HTTP/1.0 200")

        db.proxy.go_down()
        for _ in range(3):
            assert (await answer_of(port)).startswith("HTTP/1.0 503")
        db.proxy.come_back()
        answer = await answer_of(port)
        group.cancel_scope.cancel()

    assert answer.startswith("HTTP/1.0 200")
    assert "pubsub_cache_log_head 0" in answer
    assert said(caplog, "pubsub_cache.ops.metrics", GONE) == 1
    assert said(caplog, "pubsub_cache.ops.metrics", BACK) == 1


def test_a_listener_that_cannot_connect_is_an_outage_not_a_driver_error(
    db: ProxiedDatabase,
) -> None:
    # The wait reads the head on a pooled connection, then opens its LISTEN connection: when
    # only the latter fails (new connections refused, the pooled one still fine), the caller
    # must see one of the errors it retries, not psycopg's own (which would stop the daemon).
    log = EventLog(db.engine)
    assert log.head() == 0  # a pooled connection, kept open
    db.proxy.refuse_new()
    with pytest.raises(UNAVAILABLE):
        log.wait(after=0, timeout=1)
    db.proxy.come_back()
    assert not log.wait(after=0, timeout=0.3)  # listening again
    log.close()
