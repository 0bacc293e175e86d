"""Throwaway databases for tests and benchmarks: an SQLite file, or a fresh PostgreSQL schema.

A PostgreSQL scratch database is a new schema in an existing database, selected for every
connection through the URL's ``options=-csearch_path=...``: creating one takes milliseconds,
where ``CREATE DATABASE`` takes hundreds.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pubsub_cache.events.db import create_engine


@contextmanager
def scratch_postgres(base_url: str, *, prefix: str = "scratch") -> Iterator[str]:
    """A URL whose connections live in a new, empty schema; the schema is dropped afterwards."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(base_url, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def sqlite_url(path: Path) -> str:
    """The URL of an SQLite file."""
    return f"sqlite:///{path}"
