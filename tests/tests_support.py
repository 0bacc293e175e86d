"""Small helpers shared by test modules that are not fixtures."""

from __future__ import annotations

import os

import pytest

POSTGRES_ENV = "PUBSUB_CACHE_TEST_POSTGRES_URL"


def postgres_url_or_skip() -> str:
    """The suite's PostgreSQL server; skipped locally without one, a failure under CI."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL half of the suite must run in CI")
    pytest.skip(f"{POSTGRES_ENV} is not set")
