"""Search on both databases, one suite: every operator on parsed JSON, node and time filters,
full text, orders, limit/offset with the total, and injection attempts in paths, values, text.

The expected answers are written out once and must hold on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from query_helpers import ACCOUNT, SERVICE, ReadModelRows
from sqlalchemy.engine import Engine

from helpers import T0
from pubsub_cache.query import (
    OPERATORS,
    BlockingQuery,
    Filter,
    InvalidFilterValue,
    InvalidOperator,
    InvalidOrder,
    InvalidPath,
    InvalidQuery,
    Query,
)

OTHER = "mercutio@verona.lit"

CORPUS: list[tuple[str, Any, str | None]] = [
    (
        "p1",
        {
            "title": "Hello world",
            "author": {"name": "Juliet", "jid": "juliet@capulet.lit", "email": None},
            "tags": ["xmpp", "pubsub"],
            "rating": 5,
            "draft": False,
            "published": "2026-01-01T00:00:00+00:00",
            "links": [{"href": "https://a.example/1", "rel": "alternate"}],
        },
        "Hello world from Juliet",
    ),
    (
        "p2",
        {
            "title": "Bonjour Élodie",
            "author": {"name": "Élodie"},
            "tags": ["xmpp"],
            "rating": 3.5,
            "draft": True,
            "published": "2026-02-01T00:00:00+00:00",
            "links": [],
        },
        "Bonjour Élodie, un café ?",
    ),
    (
        "p3",
        {
            "title": "100% done_now",
            "author": {"name": "juliet"},
            "tags": ["cache", "sql"],
            "rating": "5",
            "published": "2026-03-01T00:00:00+00:00",
            "links": [{"href": "xmpp:pubsub.example?;node=x"}],
        },
        "percent done",
    ),
    ("p4", {"title": "Numbers", "rating": 10, "tags": "xmpp", "author": None}, "numbers ten"),
    ("p5", None, None),
]


@pytest.fixture
def search(engine: Engine) -> Iterator[BlockingQuery]:
    rows = ReadModelRows(engine)
    blog = rows.node("blog", type="blog", subtype="post")
    for n, (item_id, parsed, text) in enumerate(CORPUS):
        rows.item(blog, item_id, parsed=parsed, text=text, published=1000 * n)
    tunes = rows.node("tunes", type="tune")
    rows.item(tunes, "t1", parsed={"artist": "Romeo", "rating": 5}, text="romeo tune", published=10)
    theirs = rows.node("blog", account=OTHER)
    rows.item(theirs, "o1", parsed={"title": "Hello world", "rating": 5}, text="Hello world")
    with BlockingQuery.open(engine) as query:
        yield query


def found(query: BlockingQuery, *filters: Filter, **options: Any) -> list[str]:
    result = query.search(ACCOUNT, filters=filters, limit=100, **options)
    return sorted(hit.item.id for hit in result.hits)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (Filter("title", "eq", "Hello world"), ["p1"]),
        (Filter("rating", "eq", 5), ["p1", "t1"]),
        (Filter("rating", "eq", 5.0), ["p1", "t1"]),
        (Filter("rating", "eq", "5"), ["p3"]),
        (Filter("draft", "eq", False), ["p1"]),
        (Filter("draft", "eq", True), ["p2"]),
        (Filter("author", "eq", None), ["p4"]),
        (Filter("rating", "ne", 5), ["p2", "p3", "p4"]),
        (Filter("rating", "gt", 4), ["p1", "p4", "t1"]),
        (Filter("rating", "ge", 10), ["p4"]),
        (Filter("rating", "lt", 5), ["p2"]),
        (Filter("rating", "le", 5), ["p1", "p2", "t1"]),
        (Filter("published", "ge", "2026-02"), ["p2", "p3"]),
        (Filter("title", "lt", "Bonjour"), ["p3"]),
        (Filter("rating", "between", [3, 5]), ["p1", "p2", "t1"]),
        (Filter("published", "between", ["2026-01-15", "2026-02-15"]), ["p2"]),
        (Filter("author.name", "in", ["Juliet", "Élodie"]), ["p1", "p2"]),
        (Filter("rating", "in", [10, "5"]), ["p3", "p4"]),
        (Filter("author.name", "not_in", ["Juliet"]), ["p2", "p3"]),
        (Filter("tags", "contains", "xmpp"), ["p1", "p2"]),
        (Filter("tags", "contains", ["xmpp", "pubsub"]), ["p1"]),
        (Filter("tags", "overlap", ["sql", "pubsub"]), ["p1", "p3"]),
        (Filter("tags", "disjoint", ["xmpp"]), ["p3"]),
        (Filter("title", "like", "Hello%"), ["p1"]),
        (Filter("title", "like", "hello%"), []),
        (Filter("title", "like", "100\\%%"), ["p3"]),
        (Filter("title", "like", "%\\_now"), ["p3"]),
        (Filter("title", "like", "100_ done%"), ["p3"]),
        (Filter("title", "like", "[*]%"), []),
        (Filter("title", "ilike", "bonjour é%"), ["p2"]),
        (Filter("author.name", "ilike", "JULIET"), ["p1", "p3"]),
        (Filter("author.email", "exists", True), []),
        (Filter("links[0].href", "exists"), ["p1", "p3"]),
        (Filter("links[0].href", "like", "https:%"), ["p1"]),
        (Filter("author", "exists", False), ["p4", "p5", "t1"]),
        (Filter("author.jid", "eq", "juliet@capulet.lit"), ["p1"]),
    ],
    ids=lambda value: repr(value) if isinstance(value, Filter) else None,
)
def test_each_operator_matches_the_same_items_on_both_databases(
    search: BlockingQuery, spec: Filter, expected: list[str]
) -> None:
    assert found(search, spec) == expected


def test_every_operator_is_covered() -> None:
    assert set(OPERATORS) == {
        *("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "not_in"),
        *("contains", "overlap", "disjoint", "like", "ilike", "exists"),
    }


def test_filters_combine_with_node_columns_and_publication_time(search: BlockingQuery) -> None:
    assert found(search, Filter("rating", "eq", 5), type="tune") == ["t1"]
    assert found(search, Filter("rating", "eq", 5), node="blog") == ["p1"]
    assert found(search, service=SERVICE, subtype="post") == ["p1", "p2", "p3", "p4", "p5"]
    assert found(search, service="elsewhere") == []
    after = T0 + timedelta(seconds=1500)
    before = T0 + timedelta(seconds=3500)
    assert found(search, published_after=after, published_before=before) == ["p3", "p4"]


def test_a_node_filter_given_several_values_keeps_items_matching_any(
    search: BlockingQuery,
) -> None:
    everything = ["p1", "p2", "p3", "p4", "p5", "t1"]
    assert found(search, type=["blog", "tune"]) == everything
    assert found(search, type=["tune", "nothing"]) == ["t1"]
    assert found(search, node=["tunes", "blog"], type=["tune"]) == ["t1"]
    assert found(search, subtype=["post"], service=[SERVICE, "elsewhere"]) == everything[:5]
    # With an indexed filter and with full text (SQLite then starts from the index).
    assert found(search, Filter("author.name", "eq", "Juliet"), type=["tune", "blog"]) == ["p1"]
    assert found(search, text="romeo", type=["blog", "tune"]) == ["t1"]
    assert found(search, Filter("rating", "eq", 5), type=("blog", "tune")) == ["p1", "t1"]
    with pytest.raises(InvalidQuery, match="type takes a string or 1 to 100 strings"):
        found(search, type=[])
    with pytest.raises(InvalidQuery, match="node takes"):
        found(search, node=["blog", 5])


def test_full_text_finds_every_word_and_takes_query_syntax_literally(
    search: BlockingQuery,
) -> None:
    assert found(search, text="hello") == ["p1"]
    assert found(search, text="Élodie café") == ["p2"]
    assert found(search, text="juliet HELLO") == ["p1"]
    assert found(search, text="hello OR numbers") == []
    assert found(search, text='"hello" NEAR(world*') == []
    assert found(search, text="numbers*") == ["p4"]
    assert found(search, text="romeo", type="tune") == ["t1"]
    with pytest.raises(InvalidQuery, match="no word"):
        found(search, text="*** !!")


def test_orders_by_name_or_path_page_with_a_total(search: BlockingQuery) -> None:
    def order(*keys: str, **options: Any) -> list[str]:
        result = search.search(ACCOUNT, order_by=list(keys), limit=100, **options)
        return [hit.item.id for hit in result.hits]

    assert order("-publication") == ["p5", "p4", "p3", "p2", "t1", "p1"]
    assert order("creation", type="blog") == ["p1", "p2", "p3", "p4", "p5"]
    # Numbers, then strings, then missing; ties on the row id.
    assert order("rating") == ["p2", "p1", "t1", "p4", "p3", "p5"]
    assert order("-rating") == ["p4", "p1", "t1", "p2", "p3", "p5"]
    assert order("title", type="blog") == ["p3", "p2", "p1", "p4", "p5"]
    assert order("tags[0]", "-title", type="blog") == ["p3", "p1", "p2", "p4", "p5"]
    assert order("-creation", "title", type=["blog", "tune"])[:2] == ["t1", "p5"]
    page = search.search(ACCOUNT, order_by="creation", limit=2, offset=3)
    assert [hit.item.id for hit in page.hits] == ["p4", "p5"]
    assert (page.total, page.limit, page.offset) == (6, 2, 3)
    hit = page.hits[0]
    assert (hit.service, hit.node, hit.item.parsed["title"]) == (SERVICE, "blog", "Numbers")


def test_another_accounts_items_never_appear_in_a_search(search: BlockingQuery) -> None:
    assert found(search, Filter("title", "eq", "Hello world")) == ["p1"]
    assert [h.item.id for h in search.search(OTHER, text="hello").hits] == ["o1"]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "title'); DROP TABLE pubsub_item; --",
        "title' OR '1'='1",
        "a..b",
        ".a",
        "a.",
        "1abc",
        "a b",
        "a[01]",
        "a[-1]",
        "a[x]",
        "a]",
        "$.title",
        "{title}",
        "a,b",
        'a"b',
        "a\\b",
        "x" * 65,
        ".".join(["a"] * 17),
    ],
)
def test_a_path_outside_the_grammar_is_refused(search: BlockingQuery, path: str) -> None:
    with pytest.raises(InvalidPath):
        found(search, Filter(path, "eq", "x"))


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (Filter("title", "eq; DROP TABLE pubsub_item", "x"), InvalidOperator),
        (Filter("title", "regex", "x"), InvalidOperator),
        (Filter("title", "eq", ["x"]), InvalidFilterValue),
        (Filter("title", "eq", {"a": 1}), InvalidFilterValue),
        (Filter("rating", "lt", True), InvalidFilterValue),
        (Filter("rating", "lt", None), InvalidFilterValue),
        (Filter("rating", "eq", float("nan")), InvalidFilterValue),
        (Filter("rating", "between", [1, 2, 3]), InvalidFilterValue),
        (Filter("rating", "between", [1, "2"]), InvalidFilterValue),
        (Filter("rating", "in", []), InvalidFilterValue),
        (Filter("rating", "in", 5), InvalidFilterValue),
        (Filter("tags", "contains", [["nested"]]), InvalidFilterValue),
        (Filter("title", "like", 5), InvalidFilterValue),
        (Filter("title", "like", "ends with \\"), InvalidFilterValue),
        (Filter("title", "eq", "nul\x00"), InvalidFilterValue),
        (Filter("draft", "exists", "yes"), InvalidFilterValue),
    ],
)
def test_an_invalid_operator_or_value_is_refused_clearly(
    search: BlockingQuery, spec: Filter, error: type[Exception]
) -> None:
    with pytest.raises(error, match=spec.path):
        found(search, spec)


def test_injection_in_values_text_and_orders_is_inert(
    search: BlockingQuery, engine: Engine
) -> None:
    hostile = "x' OR '1'='1'; DROP TABLE pubsub_item; --"
    assert found(search, Filter("title", "eq", hostile)) == []
    assert found(search, Filter("title", "like", f"%{hostile}")) == []
    assert found(search, Filter("tags", "contains", [hostile])) == []
    assert found(search, Filter("rating", "in", [hostile, 10])) == ["p4"]
    assert found(search, text="'; DROP TABLE pubsub_item_fts; --") == []
    with pytest.raises(InvalidOrder):
        search.search(ACCOUNT, order_by="title; DROP TABLE pubsub_item")
    with pytest.raises(InvalidQuery, match="limit"):
        search.search(ACCOUNT, limit=0)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM pubsub_item")).scalar() == 7
    assert found(search, text="hello") == ["p1"]


@pytest.mark.anyio
async def test_the_async_search_answers_like_the_blocking_one(
    search: BlockingQuery, engine: Engine
) -> None:
    async with Query.open(engine) as query:
        result = await query.search(ACCOUNT, filters=[Filter("tags", "contains", "xmpp")])

    assert sorted(hit.item.id for hit in result.hits) == ["p1", "p2"]
    assert result.total == 2
