"""A daemon serving many accounts looks for their sync requests with one query for all of them
(``ReadModelDirectory(shared_requests=...)``), not one per account and poll: each account still
gets exactly its own requests, in log order, and a new request is seen once the snapshot ages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from query_helpers import ReadModelRows
from sqlalchemy.engine import Engine

from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.schema import pubsub_node
from pubsub_cache.xmpp.directory import NodeRef, ReadModelDirectory
from xmpp_fixtures import eventually

SERVICE = "pubsub.example.org"
ACCOUNTS = [f"user{n}@example.org" for n in range(5)]


@contextmanager
def counted_node_queries(engine: Engine) -> Iterator[list[str]]:
    """The statements run on ``engine`` that read pubsub_node, while the block runs."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "pubsub_node" in statement:
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def requested(directory: ReadModelDirectory, account: str) -> list[str]:
    return [request.ref.node for request in directory.sync_requests(account)]


def test_one_query_answers_every_accounts_requests(engine: Engine) -> None:
    rows = ReadModelRows(engine)
    for n, account in enumerate(ACCOUNTS):
        for k in range(n % 3):
            rows.node(f"n{n}-{k}", service=SERVICE, account=account, sync_requested=True)
        rows.node(f"quiet{n}", service=SERVICE, account=account)
    shared = ReadModelDirectory(engine, default_registry(), shared_requests=3600)
    alone = ReadModelDirectory(engine, default_registry())

    with counted_node_queries(engine) as queries:
        answers = {account: requested(shared, account) for account in ACCOUNTS * 3}
    assert len(queries) == 1
    assert answers == {account: requested(alone, account) for account in ACCOUNTS}
    assert answers[ACCOUNTS[2]] == ["n2-0", "n2-1"]
    assert answers[ACCOUNTS[0]] == []
    first = shared.sync_requests(ACCOUNTS[1])[0]
    assert first.ref == NodeRef(SERVICE, "n1-0")


@pytest.mark.anyio
async def test_a_new_request_is_seen_once_the_snapshot_ages(engine: Engine) -> None:
    rows = ReadModelRows(engine)
    node = rows.node("later", service=SERVICE, account=ACCOUNTS[0])
    shared = ReadModelDirectory(engine, default_registry(), shared_requests=0.05)
    assert requested(shared, ACCOUNTS[0]) == []
    with engine.begin() as connection:
        connection.execute(
            pubsub_node.update().where(pubsub_node.c.id == node).values(sync_requested_position=99)
        )
    await eventually(lambda: requested(shared, ACCOUNTS[0]) == ["later"])
