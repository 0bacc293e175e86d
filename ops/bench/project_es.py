"""The `eventsourcing` library's projection of the same work, for ``bench project``.

Issue 12 reported that the Python ``eventsourcing`` library (9.5.6) projected our events 1.37x
faster than we do. This side reproduces that comparison with the library's public API, so the
figure is measured in the same run as ours: our encoded events stored in its recorder (one
aggregate sequence per node), read back through its ``Mapper`` (a subclass decoding our bytes
with our codec), and applied by a ``Projection`` whose materialised view is one of its
``TrackingRecorder`` classes. The view parses each payload with our parser and upserts the same
``pubsub_item`` row as the raw side, with the library's tracking record in the same
transaction: one transaction per event, as its ``process_event`` works.

On PostgreSQL the library's ``ProjectionRunner`` drives it (a subscription thread woken by its
recorder). Its SQLite recorder cannot be subscribed to, so there the same loop is run by hand:
``select_notifications`` pages of 500, mapped and handed to ``process_event``.

The library is an optional bench dependency (``pip install 'pubsub-cache[bench]'``, with its
``postgres`` extra for PostgreSQL):
:func:`available` says whether it is installed, and the bench prints a line instead of a rate.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

from pubsub_cache.events.codec import decode, encode
from pubsub_cache.events.types import ItemsPublished
from pubsub_cache.projector.parsers import MicroblogParser
from pubsub_cache.projector.xmlsafe import parse_payload

VERSION = "9.5.6"
PAGE = 500


def available() -> bool:
    """Whether the ``eventsourcing`` library can be imported."""
    return importlib.util.find_spec("eventsourcing") is not None


def measure(
    url: str, events: list[ItemsPublished], node_id: int, upsert: str, contents: str
) -> float:
    """Store ``events`` in the library's recorder, then time its projection of them into
    ``pubsub_item`` (node ``node_id``, with ``upsert`` and ``contents`` in the driver's
    parameter style: ``project.py``'s raw statements)
    Returns items per second."""
    from eventsourcing.application import Application
    from eventsourcing.persistence import Mapper, StoredEvent, Tracking
    from eventsourcing.projection import Projection, ProjectionRunner

    parser = MicroblogParser()
    encode_json = msgspec.json.encode

    class OurEvents(Mapper[uuid.UUID]):
        """Stored states are our msgpack event bodies."""

        def to_domain_event(self, stored_event: StoredEvent) -> Any:
            return decode(stored_event.state)

    class PubsubLog(Application[uuid.UUID]):
        name = "PubsubLog"

        def construct_mapper(self) -> Mapper[uuid.UUID]:
            return OurEvents(transcoder=self.factory.transcoder())

    from pubsub_cache.ops.bench.project import raw_rows, stored_text

    derives_text = url.startswith("sqlite")

    def row(event: ItemsPublished) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        item = event.items[0]
        payload = item.payload or ""
        result = parser.parse(parse_payload(payload))
        published = result.published.timestamp() if result.published else 0.0
        return raw_rows(
            node_id, item.id, item.publisher or "", payload, encode_json(result.data).decode(),
            parser, stored_text(result, derives_text=derives_text), published, 0,
        )  # fmt: skip

    class ItemViewMixin:
        """Writes one item row and the tracking record in one transaction."""

        datastore: Any

        def publish(
            self, values: tuple[tuple[Any, ...], tuple[Any, ...]], tracking: Tracking
        ) -> None:
            with self.datastore.transaction(commit=True) as cursor:
                cursor.execute(contents, values[0])
                cursor.execute(upsert, values[1])
                self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]

    class ItemProjection(Projection[Any]):
        name = "pubsub_items"

        def process_event(self, domain_event: Any, tracking: Tracking) -> None:
            self.view.publish(row(domain_event), tracking)

    with _library_env(url) as env:
        app = PubsubLog(env)
        originators: dict[str, uuid.UUID] = {}
        versions: dict[uuid.UUID, int] = {}
        stored = []
        for event in events:
            originator = originators.setdefault(event.node, uuid.uuid4())
            versions[originator] = versions.get(originator, 0) + 1
            stored.append(
                StoredEvent(originator, versions[originator], "pubsub_cache:event", encode(event))
            )
        for start in range(0, len(stored), PAGE):
            app.recorder.insert_events(stored[start : start + PAGE])
        last = app.recorder.max_notification_id()
        if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
            from eventsourcing.postgres import PostgresTrackingRecorder

            class PostgresItemView(ItemViewMixin, PostgresTrackingRecorder):
                pass

            began = time.perf_counter()
            with ProjectionRunner(
                application_class=PubsubLog,
                projection_class=ItemProjection,
                view_class=PostgresItemView,
                env=env,
            ) as runner:
                runner.wait(last, timeout=600)
                elapsed = time.perf_counter() - began
        else:
            from eventsourcing.sqlite import SQLiteTrackingRecorder

            class SQLiteItemView(ItemViewMixin, SQLiteTrackingRecorder):
                pass

            began = time.perf_counter()
            _pull(app, SQLiteItemView, ItemProjection, env, last)
            elapsed = time.perf_counter() - began
        app.close()
    return len(events) / elapsed


def _pull(app: Any, view_class: Any, projection_class: Any, env: dict[str, str], last: Any) -> None:
    """What ``ProjectionRunner`` does, without a subscription: pages of notifications."""
    from eventsourcing.persistence import InfrastructureFactory, Tracking
    from eventsourcing.utils import Environment

    factory = InfrastructureFactory.construct(env=Environment(projection_class.name, env))
    projection = projection_class(view=factory.tracking_recorder(view_class))
    position = projection.view.max_tracking_id(app.name)
    while last is not None and (position or 0) < last:
        notifications = app.recorder.select_notifications(
            position, PAGE, inclusive_of_start=position is None
        )
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            projection.process_event(event, Tracking(app.name, notification.id))
            position = notification.id
    factory.close()


@contextmanager
def _library_env(url: str) -> Iterator[dict[str, str]]:
    """The library's settings for the database at ``url`` (its own tables beside ours)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        yield {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(parsed.database)}
        return
    options = str(parsed.query.get("options", ""))
    schema = options.removeprefix("-csearch_path=") if "search_path" in options else "public"
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parsed.database),
        "POSTGRES_HOST": parsed.host or "127.0.0.1",
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": parsed.username or "postgres",
        "POSTGRES_PASSWORD": parsed.password or "",
        "POSTGRES_SCHEMA": schema,
    }
    # Our triggers name our tables unqualified: the library's connections get our search path.
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = options
    try:
        yield env
    finally:
        if before is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = before
