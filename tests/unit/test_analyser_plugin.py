"""The analyser entry point, as a third party uses it: examples/analyser-plugin, built and
installed by pip (into a folder of its own, not this environment), found by the projector
through its ``pubsub_cache.analysers`` entry point.

The projector runs as ``pubsub-cache project`` in a fresh interpreter whose path holds the
installed plugin, so discovery is importlib.metadata's reading of the plugin's dist-info, as in
production. The second test is the README's rule: rows stored before a parser was installed
(or upgraded) keep their old parse until ``pubsub-cache replay``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ITEM_ROWS

from pubsub_cache.events import Item, ItemsPublished
from pubsub_cache.events.db import create_engine
from pubsub_cache.events.log import EventLog
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.scratch import sqlite_url
from pubsub_cache.projector.schema import pubsub_node

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "analyser-plugin"
MOOD_NS = "http://jabber.org/protocol/mood"
ACCOUNT = "romeo@montague.lit"
CONTACT = "juliet@capulet.lit"
MOOD = f"<mood xmlns='{MOOD_NS}'><happy/><text>Yay, the mood spec has been approved!</text></mood>"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example plugin as ``pip install`` lays it out (with its dist-info)."""
    folder = tmp_path_factory.mktemp("plugin")
    source = folder / "source"  # built from a copy: nothing is written into examples/
    shutil.copytree(PLUGIN, source)
    site = folder / "site"
    install = ["install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run(
        [sys.executable, "-m", "pip", *install, str(source)], capture_output=True, check=True
    )
    return site


def published_mood(url: str) -> int:
    """A contact's mood as a notification appended to the log; returns its position."""
    engine = create_engine(url)
    ensure_schema(engine)
    log = EventLog(engine)
    event = ItemsPublished(
        account=ACCOUNT,
        service=CONTACT,
        node=MOOD_NS,
        observed_at=datetime(2026, 12, 2, tzinfo=UTC),
        items=[Item(id="current", publisher=CONTACT, payload=MOOD)],
    )
    (position,) = log.append([event])
    log.close()
    engine.dispose()
    return position


def pubsub_cache(url: str, *args: str, site: Path | None = None) -> None:
    """Runs the ``pubsub-cache`` command in a fresh interpreter, with ``site`` on its path."""
    env = {**os.environ, "PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_JID": ACCOUNT}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    script = "import sys; from pubsub_cache.ops.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr


def stored_mood(url: str) -> dict[str, Any]:
    """The mood item's row and its node's type, as the projector left them."""
    engine = create_engine(url)
    statement = (
        sa.select(
            pubsub_node.c.analyser,
            pubsub_node.c.type,
            ITEM_ROWS.c.parser,
            ITEM_ROWS.c.parser_version,
            sa.cast(ITEM_ROWS.c.parsed, sa.Text).label("parsed"),
            ITEM_ROWS.c.text,
        )
        .join(pubsub_node, pubsub_node.c.id == ITEM_ROWS.c.node_id)
        .where(pubsub_node.c.node == MOOD_NS, ITEM_ROWS.c.item_id == "current")
    )
    with engine.connect() as connection:
        row = dict(connection.execute(statement).one()._mapping)
    engine.dispose()
    row["parsed"] = None if row["parsed"] is None else json.loads(row["parsed"])
    return row


PARSED = {
    "analyser": "example-mood",
    "type": "mood",
    "parser": "example-mood",
    "parser_version": 1,
    "parsed": {"mood": "happy", "text": "Yay, the mood spec has been approved!"},
    "text": "Yay, the mood spec has been approved!",
}


@pytest.mark.slow
def test_an_installed_plugin_parses_the_items_of_its_nodes(
    plugin_site: Path, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "cache.sqlite3")
    published_mood(url)

    pubsub_cache(url, "project", "--until-caught-up", site=plugin_site)

    assert stored_mood(url) == PARSED


@pytest.mark.slow
def test_rows_stored_before_the_plugin_get_its_parse_by_a_replay(
    plugin_site: Path, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "cache.sqlite3")
    published_mood(url)
    pubsub_cache(url, "project", "--until-caught-up")  # no plugin: no analyser for mood nodes
    before = stored_mood(url)

    pubsub_cache(url, "project", "--until-caught-up", site=plugin_site)  # a restart: nothing new
    after_restart = stored_mood(url)
    pubsub_cache(url, "replay", site=plugin_site)

    assert (before["analyser"], before["parsed"]) == (None, None)
    assert after_restart == before
    assert stored_mood(url) == PARSED
