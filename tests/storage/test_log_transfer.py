"""Export, import and compaction of the log (invariant 3 across databases and after retention)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import ACCOUNT, SERVICE, at, atom, published, purged, retracted
from pubsub_cache.events import (
    CacheReset,
    Event,
    NodeConfigured,
    NodeDeleted,
    NotificationRejected,
)
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.events.transfer import (
    ImportConflict,
    MalformedExport,
    export_log,
    import_log,
    read_export,
)
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import scratch_postgres
from pubsub_cache.projector.analysers import default_registry
from pubsub_cache.projector.compact import compact
from pubsub_cache.projector.digest import read_model_digest
from pubsub_cache.projector.rebuild import Rebuild
from pubsub_cache.projector.runner import Projector
from tests_support import postgres_url_or_skip

MICROBLOG = "urn:xmpp:microblog:0"


def history() -> list[Event]:
    events: list[Event] = []
    for i in range(30):
        node = MICROBLOG if i % 2 else "other"
        events.append(published(f"i{i % 7}", node=node, payload=atom(f"t{i}"), when=i))
        if i % 5 == 4:
            events.append(retracted(f"i{(i + 1) % 7}", node=node, when=i))
    events.append(purged(node="other", when=40))
    events.append(published("after-purge", node="other", when=41))
    events.append(published("doomed", node="reset-me", when=42))
    events.append(published("doomed-too", node="reset-me", when=43))
    events.append(CacheReset(account=ACCOUNT, observed_at=at(44), node="reset-me"))
    events.append(
        NotificationRejected(
            account=ACCOUNT, service="m@x/r", node=MICROBLOG, observed_at=at(45), reason="spoof"
        )
    )
    events.append(NodeDeleted(account=ACCOUNT, service=SERVICE, node="gone", observed_at=at(46)))
    return events


def digest(engine: Engine) -> str:
    with engine.connect() as connection:
        return read_model_digest(connection)


@pytest.mark.parametrize("fmt", ["ndjson", "msgpack"])
def test_export_then_import_into_another_database_gives_the_same_read_model(
    engine: Engine, event_log: EventLog, fmt: str, tmp_path: Path
) -> None:
    event_log.append(history())
    Projector(engine, registry=default_registry()).catch_up()
    buffer = io.BytesIO()
    assert export_log(event_log, buffer, fmt=fmt, batch=7) == event_log.head()  # type: ignore[arg-type]
    buffer.seek(0)
    other = create_engine(f"sqlite:///{tmp_path}/imported.sqlite3")
    ensure_schema(other)
    assert import_log(other, read_export(buffer, fmt=fmt), batch=5) == event_log.head()  # type: ignore[arg-type]
    Projector(other, registry=default_registry()).catch_up()
    assert digest(other) == digest(engine)
    # Positions are kept, and never reused: a second import is refused.
    buffer.seek(0)
    with pytest.raises(ImportConflict, match="positions are never reused"):
        import_log(other, read_export(buffer, fmt=fmt))  # type: ignore[arg-type]
    other.dispose()


def test_moving_a_cache_from_sqlite_to_postgresql_by_export_import_replay(
    tmp_path: Path,
) -> None:
    base = postgres_url_or_skip()
    source_url = f"sqlite:///{tmp_path}/source.sqlite3"
    source = create_engine(source_url)
    ensure_schema(source)
    EventLog(source).append(history())
    Projector(source, registry=default_registry()).catch_up()
    cli = str(Path(sys.executable).parent / "pubsub-cache")
    dump = tmp_path / "log.msgpack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_CACHE_")}
    exported = subprocess.run(
        [cli, "log", "export", str(dump)],
        env={**env, "PUBSUB_CACHE_DATABASE_URL": source_url},
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    with scratch_postgres(base, prefix="move") as target_url:
        target_env = {**env, "PUBSUB_CACHE_DATABASE_URL": target_url}
        for command in (["log", "import", str(dump)], ["replay"]):
            result = subprocess.run([cli, *command], env=target_env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
        target = create_engine(target_url)
        assert digest(target) == digest(source)
        target.dispose()
    source.dispose()


def test_a_malformed_export_names_the_record(tmp_path: Path) -> None:
    broken = io.BytesIO(b'{"position": 1, "recorded_at": 0, "event": {"type": "nope"}}\n')
    with pytest.raises(MalformedExport, match="record 1"):
        list(read_export(broken, fmt="ndjson"))


def test_compaction_removes_irrelevant_events_and_replay_still_equals_live(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append(history())
    Projector(engine, registry=default_registry()).catch_up()
    head = event_log.head()
    live = digest(engine)
    removed = compact(engine)
    assert removed > 0
    assert len(event_log.read(after=0, limit=1000)) == head - removed
    rebuild = Rebuild(engine, default_registry())
    rebuild.prepare(fresh=True)
    rebuild.catch_up()
    result = rebuild.finish(swap=False, verify=True)
    assert result.identical, "replay after compaction differs from live"
    assert result.live_digest == live
    assert event_log.append([published("new")]) == [head + 1]  # positions never reused


def test_compaction_keeps_what_no_projector_has_applied(
    engine: Engine, event_log: EventLog
) -> None:
    event_log.append([published("a"), retracted("a")])
    assert compact(engine) == 0  # no checkpoint yet: nothing is below it
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM event")).scalar() == 2


def test_compaction_keeps_a_publication_that_evicted_on_a_node_with_a_known_limit(
    engine: Engine, event_log: EventLog
) -> None:
    # max_items 2: publishing c evicts a; c is retracted later. Without c's publication a
    # rebuild would keep a (projector/compact.py).
    configured = NodeConfigured(
        account=ACCOUNT,
        service=SERVICE,
        node="limited",
        observed_at=at(0),
        source="fetch",
        form={"pubsub#max_items": ["2"]},
    )
    history = [configured, *(published(i, node="limited") for i in "abc")]
    event_log.append([*history, retracted("c", node="limited"), published("d", node="other")])
    Projector(engine, registry=default_registry()).catch_up()
    live = digest(engine)

    compact(engine)
    with engine.begin() as connection:
        for table in ("pubsub_item", "pubsub_node", "pubsub_counter", "projector_checkpoint"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    Projector(engine, registry=default_registry()).catch_up()
    assert digest(engine) == live
