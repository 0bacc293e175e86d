"""Parsed-JSON paths and LIKE patterns: what the grammar admits and how it is spelled in SQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pubsub_cache.query import InvalidPath
from pubsub_cache.query.filters import like_to_glob
from pubsub_cache.query.paths import parse_path


@pytest.mark.parametrize(
    ("text", "sqlite", "postgres"),
    [
        ("title", "$.title", "{title}"),
        ("author.name", "$.author.name", "{author,name}"),
        ("links[0].href", "$.links[0].href", "{links,0,href}"),
        ("in-reply-to[12]", "$.in-reply-to[12]", "{in-reply-to,12}"),
        ("_x.y_2[0][1]", "$._x.y_2[0][1]", "{_x,y_2,0,1}"),
    ],
)
def test_a_valid_path_is_spelled_for_each_database(text: str, sqlite: str, postgres: str) -> None:
    path = parse_path(text)

    assert (path.sqlite, path.postgres) == (sqlite, postgres)


def test_an_invalid_path_says_where_it_goes_wrong() -> None:
    with pytest.raises(InvalidPath, match="character 7"):
        parse_path("author'name")
    with pytest.raises(InvalidPath, match="at most 64"):
        parse_path("k" * 70)
    with pytest.raises(InvalidPath, match="a path is text"):
        parse_path(3)


@pytest.mark.parametrize(
    ("like", "glob"),
    [
        ("Hello%", "Hello*"),
        ("a_c", "a?c"),
        ("100\\%", "100%"),
        ("\\_x", "_x"),
        ("a*b?c[d]", "a[*]b[?]c[[]d]"),
        ("\\\\", "\\"),
    ],
)
def test_like_patterns_become_the_equivalent_glob(like: str, glob: str) -> None:
    assert like_to_glob(like) == glob


def test_importing_the_query_library_builds_nothing() -> None:
    probe = (
        "import sys, threading\n"
        "import pubsub_cache.query\n"
        "assert 'slixmpp' not in sys.modules, 'slixmpp imported'\n"
        "assert threading.active_count() == 1, 'a thread was started'\n"
        "import gc, sqlalchemy.engine\n"
        "assert not [o for o in gc.get_objects() if isinstance(o, sqlalchemy.engine.Engine)]\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
