"""The daemons' log lines (issue 11): identifiers are keys, not words of the message; JSON lines
off a terminal, readable lines on one (or as forced); Alembic's INFO chatter only at DEBUG."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pubsub_cache.events.db import create_engine
from pubsub_cache.migrations.api import ensure_schema
from pubsub_cache.ops.logs import configure_logging
from pubsub_cache.ops.scratch import sqlite_url

KEYS = {"account": "romeo@montague.lit", "service": "pubsub.capulet.lit", "node": 'a "node"'}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic = logging.getLogger("alembic").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic)


def test_json_lines_carry_the_extra_keys_as_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("pubsub_cache.test").info("sync finished", extra={**KEYS, "items": 3})

    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "sync finished"
    assert record["level"] == "info"
    assert record["logger"] == "pubsub_cache.test"
    assert {key: record[key] for key in KEYS} == KEYS
    assert record["items"] == 3


def test_text_is_forced_with_the_keys_after_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("pubsub_cache.test").warning("sync failed", extra=KEYS)

    [line] = capsys.readouterr().err.splitlines()
    assert " WARNING pubsub_cache.test: sync failed " in line
    assert line.endswith(
        'account=romeo@montague.lit service=pubsub.capulet.lit node="a \\"node\\""'
    )


PROBE = """
import logging
from pubsub_cache.ops.logs import configure_logging
configure_logging("INFO", "auto")
logging.getLogger("probe").info("hello", extra={"account": "romeo@montague.lit"})
"""


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    primary, secondary = os.openpty()
    try:
        subprocess.run([sys.executable, "-c", PROBE], stderr=secondary, check=True, timeout=60)
        on_terminal = os.read(primary, 4096).decode()
    finally:
        os.close(primary)
        os.close(secondary)
    piped = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stderr

    assert " INFO    probe: hello account=romeo@montague.lit" in on_terminal
    assert json.loads(piped)["account"] == "romeo@montague.lit"


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_alembic_speaks_at_debug_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, level: str, shown: bool
) -> None:
    configure_logging(level, "json")
    engine = create_engine(sqlite_url(tmp_path / "cache.sqlite3"))
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    alembic = [line for line in lines if line["logger"].startswith("alembic")]
    assert bool(alembic) is shown
    assert all(line["level"] == "debug" for line in alembic)
