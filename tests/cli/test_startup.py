"""Start-up of the command line: ``--help`` and a cached read import only what they use.

The figures are ``pubsub-cache bench cli``'s (timing is not asserted: these machines are noisy);
these tests pin the causes. Each import check runs in a fresh interpreter and looks at
``sys.modules`` after the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import click
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pubsub_cache.events.db import create_engine
from pubsub_cache.migrations.api import head_revision, known_head, upgrade
from pubsub_cache.ops.bench.cli import bench
from pubsub_cache.ops.bench.payloads import MICROBLOG_NODE
from pubsub_cache.ops.bench.startup import ACCOUNT, ITEMS, SERVICE, fill_node
from pubsub_cache.ops.cli import COMMANDS, LazyGroup, cli

#: What ``--help`` must not load: the XMPP library, Alembic, the ORM, the database layer at all.
HEAVY = ("slixmpp", "alembic", "sqlalchemy", "sqlalchemy.orm", "pubsub_cache.ops.bench")


def loaded_after(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Runs ``code`` in a fresh interpreter; returns its ``RESULT`` and the modules it loaded."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps({'result': RESULT, 'modules': sorted(sys.modules)}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_help_imports_neither_slixmpp_nor_alembic_nor_sqlalchemy() -> None:
    code = (
        "import contextlib, io\n"
        "from pubsub_cache.ops.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    status = main(['--help'])\n"
        "RESULT = [status, out.getvalue()]"
    )
    found = loaded_after(code)

    status, text = cast("list[Any]", found["result"])
    assert status == 0
    for name in COMMANDS:
        assert f"  {name} " in text
    assert [name for name in HEAVY if name in found["modules"]] == []  # type: ignore[operator]


def test_a_command_at_head_checks_the_schema_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    code = (
        "from pubsub_cache.ops.context import AppContext\n"
        "app = AppContext()\n"
        "app.engine(create=False)\n"
        "app.close()\n"
        "RESULT = 'ok'"
    )
    found = loaded_after(code, {"PUBSUB_CACHE_DATABASE_URL": url})

    assert found["result"] == "ok"
    modules = found["modules"]
    assert [name for name in ("alembic", "slixmpp") if name in modules] == []  # type: ignore[operator]


def test_a_command_on_an_empty_database_still_migrates_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    env = {"PUBSUB_CACHE_DATABASE_URL": url}
    code = (
        "from pubsub_cache.ops.context import AppContext\n"
        "from pubsub_cache.migrations.api import current_revision\n"
        "app = AppContext()\n"
        "RESULT = current_revision(app.engine())\n"
        "app.close()"
    )

    assert loaded_after(code, env)["result"] == head_revision()


def test_the_head_read_from_the_revision_files_is_alembics_head() -> None:
    assert known_head() == head_revision()


@pytest.mark.parametrize(
    ("group", "name"),
    [(cli, name) for name in COMMANDS] + [(bench, name) for name in ("ingest",)],
)
def test_a_listed_short_help_is_the_commands_own(group: LazyGroup, name: str) -> None:
    listed = group.lazy[name]
    context = click.Context(group)

    command = group.get_command(context, name)

    assert command is not None
    assert listed.short_help == command.get_short_help_str(limit=10_000)


#: What a cached ``get`` must not load: the XMPP library, the payload parsers and their XML
#: library, Alembic, the PostgreSQL driver and dialect, metrics, terminal rendering, and the
#: parts of the query library a cached read does not use (the blocking facade's thread portal).
NOT_ON_THE_CACHED_READ = (
    "slixmpp",
    "lxml",
    "alembic",
    "psycopg",
    "prometheus_client",
    "rich",
    "sqlalchemy.dialects.postgresql",
    "pubsub_cache.projector.analysers",
    "pubsub_cache.projector.parsers",
    "pubsub_cache.query.blocking",
    "pubsub_cache.query.search",
    "anyio.from_thread",
    "pubsub_cache.ops.dev",
)


def test_a_cached_get_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    fill_node(url)
    env = {"PUBSUB_CACHE_DATABASE_URL": url, "PUBSUB_CACHE_JID": ACCOUNT}
    code = (
        "import contextlib, io\n"
        "from pubsub_cache.ops.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    status = main(['get', '--cache-only', '--json', {SERVICE!r}, {MICROBLOG_NODE!r}])\n"
        "RESULT = [status, out.getvalue()]"
    )
    found = loaded_after(code, env)

    status, text = cast("list[Any]", found["result"])
    assert status == 0
    page = json.loads(text)
    assert (len(page["items"]), page["from_cache"]) == (ITEMS, True)
    modules = cast("list[str]", found["modules"])
    loaded = [name for name in NOT_ON_THE_CACHED_READ if name in modules]
    assert loaded == []


def test_a_blocking_cached_read_starts_no_portal_search_or_feed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    fill_node(url)
    code = (
        "from pubsub_cache.query import BlockingQuery\n"
        f"with BlockingQuery.open({url!r}) as query:\n"
        f"    page = query.get_items({ACCOUNT!r}, {SERVICE!r}, {MICROBLOG_NODE!r})\n"
        "RESULT = len(page.items)"
    )
    found = loaded_after(code)

    assert found["result"] == ITEMS
    modules = cast("list[str]", found["modules"])
    unused = ("anyio.from_thread", "pubsub_cache.query.search", "pubsub_cache.query.watch")
    assert [name for name in unused if name in modules] == []


def test_the_query_package_still_offers_every_public_name() -> None:
    code = (
        "import pubsub_cache.query as query\n"
        "RESULT = [sorted(query.__all__), sorted(query._HOMES),\n"
        "          [name for name in query.__all__ if getattr(query, name, None) is None]]"
    )
    found = loaded_after(code)

    public, homes, missing = cast("list[list[str]]", found["result"])
    assert (public, missing) == (homes, [])
    assert "pubsub_cache.query.blocking" in cast("list[str]", found["modules"])


def test_the_partial_key_index_is_partial_on_both_engines(engine: Engine) -> None:
    # The model leaves the WHERE out (a postgresql_where imports the dialect): migration 0005
    # is what makes the index partial, on each engine.
    indexes = {index["name"]: index for index in sa.inspect(engine).get_indexes("pubsub_item_key")}

    options = indexes["ix_pubsub_item_key_number"]["dialect_options"]
    where = str(options[f"{engine.dialect.name}_where"])
    assert " ".join(where.strip("()").split()).lower() == "value_num is not null"


def test_no_runtime_module_imports_the_dev_tooling() -> None:
    # Every module but the benchmarks' and the dev tooling's own (and Alembic's env, which runs
    # only under Alembic), imported in a fresh interpreter: the throwaway servers of ops/dev are
    # for tests and benchmarks only.
    program = """
import pkgutil, importlib, sys
import pubsub_cache
for info in pkgutil.walk_packages(pubsub_cache.__path__, "pubsub_cache."):
    skipped = ("pubsub_cache.ops.bench", "pubsub_cache.ops.dev", "pubsub_cache.migrations.env")
    if not info.name.startswith(skipped):
        importlib.import_module(info.name)
print(sorted(name for name in sys.modules if name.startswith("pubsub_cache.ops.dev.")))
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
