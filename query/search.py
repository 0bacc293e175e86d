"""Search over one account's cached items: filters on parsed JSON (:mod:`.filters`), on the node
(service, node, type, subtype), on publication time, full-text words, ordering, limit/offset.

Full text: the words of ``text`` (runs of letters and digits; everything else separates them)
must all occur in the text the parser extracted: an FTS5 query of quoted words on SQLite, a
``plainto_tsquery('simple', ...)`` on PostgreSQL. Nothing the user types reaches either query
language unquoted. The index is narrowed to the account's nodes (those the node filters leave)
inside the index: FTS5's ``node_id`` column, the ``~nNODE`` lexemes of the indexed vector
(migrations 0005, 0008), so a word common in other accounts costs nothing here.

Filters on searchable paths read ``pubsub_item_key`` (see :mod:`.filters`); the search then
starts from the items the index names (the full-text matches, or the keys'), never from every
item of the account.

Orders: ``service``, ``creation``, ``modification``, ``publication`` or a parsed path, ascending, or
descending with a leading ``-`` (default ``-publication``: newest first). A path orders its
values by JSON type first (numbers, strings, booleans, arrays, objects, null, missing) then by
value (strings by code point), so both databases give one order; ties end on the row id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pubsub_cache.projector.schema import pubsub_content, pubsub_item, pubsub_node

from .errors import InvalidOrder, InvalidPath, InvalidQuery
from .filters import JSON_COLUMN, SQLITE_LOWER, Filter, Params, filter_clause
from .model import SearchHit, SearchResult
from .paths import parse_path
from .rows import ORDER_KEYS, item_columns, to_item

MAX_LIMIT = 1000
MAX_FILTERS = 32
#: Most values of one node filter (``type=[...]``).
MAX_VALUES = 100
MAX_WORDS = 32
#: Full text is narrowed to at most this many nodes inside the index; beyond, after it.
MAX_SCOPE = 1000
_WORD = re.compile(r"[^\W_]+")


def search(
    engine: Engine,
    account: str,
    *,
    filters: Iterable[Filter] = (),
    text: str | None = None,
    service: str | Sequence[str] | None = None,
    node: str | Sequence[str] | None = None,
    type: str | Sequence[str] | None = None,
    subtype: str | Sequence[str] | None = None,
    published_after: datetime | None = None,
    published_before: datetime | None = None,
    order_by: str | Sequence[str] = "-publication",
    limit: int = 20,
    offset: int = 0,
) -> SearchResult:
    """The account's items matching every condition given, and how many match in all.

    ``service``, ``node``, ``type`` and ``subtype`` each take one value or a list of values, any
    of which matches (``type=["blog", "avatar"]``).
    """
    dialect = engine.dialect.name
    if not _is_int(limit) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise InvalidQuery(f"offset must be a non-negative integer, got {offset!r}")
    specs = list(filters)
    if len(specs) > MAX_FILTERS:
        raise InvalidQuery(f"at most {MAX_FILTERS} filters, got {len(specs)}")
    params = Params()
    node_values = _node_values(account, service, node, type, subtype)
    conditions: list[Any] = [_is(pubsub_node.c[name], value) for name, value in node_values]
    on_nodes = list(conditions)
    found_words = words(text) if text is not None else None
    if published_after is not None:
        conditions.append(pubsub_item.c.published_at >= _seconds(published_after))
    if published_before is not None:
        conditions.append(pubsub_item.c.published_at < _seconds(published_before))
    conditions.extend(filter_clause(spec, dialect, params, account=account) for spec in specs)
    ordering = order_clauses(order_by, dialect)
    # The content is joined for its payload and parsed JSON (filters and orders on paths read
    # it); a count that names neither leaves it out (the join is on its primary key).
    joined = pubsub_item.join(pubsub_node, pubsub_node.c.id == pubsub_item.c.node_id).outerjoin(
        pubsub_content, pubsub_content.c.id == pubsub_item.c.content_id
    )
    with engine.connect() as connection:
        if found_words is not None:
            scope = _scope(connection, on_nodes)
            if scope is not None and not scope:
                return SearchResult([], 0, limit, offset)
            conditions.append(_full_text(found_words, dialect, scope))
        if dialect == "sqlite" and (params.indexed or found_words is not None):
            # Start from the items the index names (pubsub_item.id IN ...), not from the
            # account's nodes: SQLite has no statistics to tell which is smaller.
            # ("+column" keeps SQLite from using an index on it.)
            conditions[: len(on_nodes)] = [
                _is(sa.literal_column(f"+pubsub_node.{name}"), value) for name, value in node_values
            ]
        count = sa.select(sa.func.count()).select_from(joined).where(*conditions)
        rows = (
            sa.select(pubsub_node.c.service, pubsub_node.c.node, *item_columns(dialect))
            .select_from(joined)
            .where(*conditions)
            .order_by(*ordering)
            .limit(limit)
            .offset(offset)
        )
        _prepare(connection)
        total = int(connection.execute(count).scalar_one())
        hits = [SearchHit(row[0], row[1], to_item(row, 2)) for row in connection.execute(rows)]
    return SearchResult(hits, total, limit, offset)


def _node_values(*values: str | Sequence[str] | None) -> list[tuple[str, list[str]]]:
    """(column, the values any of which matches) for each node filter given."""
    names = ("account", "service", "node", "type", "subtype")
    found: list[tuple[str, list[str]]] = []
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue
        listed = [value] if isinstance(value, str) else list(value)
        if not listed or len(listed) > MAX_VALUES or not all(isinstance(v, str) for v in listed):
            raise InvalidQuery(f"{name} takes a string or 1 to {MAX_VALUES} strings, got {value!r}")
        found.append((name, list(dict.fromkeys(listed))))
    return found


def _is(column: Any, values: list[str]) -> Any:
    # One value stays an equality: the plan (and the EXPLAIN tests) of a single filter unchanged.
    return column == values[0] if len(values) == 1 else column.in_(values)


def _scope(connection: Connection, node_conditions: list[Any]) -> list[int] | None:
    """The ids of the nodes the search may find items in; ``None`` when there are too many to
    narrow the full-text index by."""
    found = (
        connection.execute(
            sa.select(pubsub_node.c.id)
            .where(*node_conditions)
            .order_by(pubsub_node.c.id)
            .limit(MAX_SCOPE + 1)
        )
        .scalars()
        .all()
    )
    return None if len(found) > MAX_SCOPE else [int(node_id) for node_id in found]


def words(text: str) -> list[str]:
    """The words of a full-text query; raises when there is none."""
    if not isinstance(text, str):
        raise InvalidQuery(f"full-text search takes text, got {text!r}")
    found = _WORD.findall(text)
    if not found:
        raise InvalidQuery(f"no word to search for in {text[:80]!r}")
    if len(found) > MAX_WORDS:
        raise InvalidQuery(f"at most {MAX_WORDS} words in a full-text search")
    return found


#: The expression PostgreSQL's GIN index is built on (migration 0008): the text's lexemes and the
#: node's ``~nNODE``; a query must name it as it is for the index to be used.
_VECTOR = (
    "(to_tsvector('simple', coalesce(pubsub_item.text, '')) "
    "|| array_to_tsvector(ARRAY['~n' || pubsub_item.node_id::text]))"
)


def _full_text(found: list[str], dialect: str, nodes: list[int] | None) -> sa.TextClause:
    if dialect == "sqlite":
        # FTS5 strings (an implicit AND) in the text column; node ids are the node_id column.
        query = "text : (" + " ".join(f'"{word}"' for word in found) + ")"
        if nodes is not None:
            query = f"node_id : ({' OR '.join(f'{n}' for n in nodes)}) AND {query}"
        sql = (
            "pubsub_item.id IN (SELECT rowid FROM pubsub_item_fts "
            "WHERE pubsub_item_fts MATCH :fts_query)"
        )
        return sa.text(sql).bindparams(fts_query=query)
    sql = f"{_VECTOR} @@ plainto_tsquery('simple', :fts_query)"
    if nodes is None:
        return sa.text(sql).bindparams(fts_query=" ".join(found))
    scope = " | ".join(f"'~n{n}'" for n in nodes)
    sql = f"{_VECTOR} @@ (plainto_tsquery('simple', :fts_query) && CAST(:fts_scope AS tsquery))"
    return sa.text(sql).bindparams(fts_query=" ".join(found), fts_scope=scope)


def order_clauses(order_by: str | Sequence[str], dialect: str) -> list[Any]:
    """ORDER BY terms for the named orders and parsed paths asked for, then the row id."""
    keys = [order_by] if isinstance(order_by, str) else list(order_by)
    if not keys or len(keys) > 8:
        raise InvalidOrder(repr(order_by), "give 1 to 8 orders")
    terms: list[Any] = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise InvalidOrder(repr(key), "an order is a non-empty string")
        descending = key.startswith("-")
        name = key[1:] if key[0] in "+-" else key
        if name in ORDER_KEYS:
            columns: list[Any] = list(ORDER_KEYS[name])
            terms.extend(column.desc() if descending else column.asc() for column in columns)
            continue
        try:
            path = parse_path(name)
        except InvalidPath as exc:
            reason = f"neither {', '.join(ORDER_KEYS)} nor a valid path ({exc.reason})"
            raise InvalidOrder(key, reason) from None
        rank, number, string = _path_order(
            path.sqlite if dialect == "sqlite" else path.postgres, dialect
        )
        terms.append(sa.literal_column(rank).asc())
        for expression in (number, string):
            column: Any = sa.literal_column(expression)
            terms.append(column.desc() if descending else column.asc())
    terms.append(pubsub_item.c.id.asc())
    return terms


def _path_order(path: str, dialect: str) -> tuple[str, str, str]:
    if dialect == "sqlite":
        kind = f"json_type({JSON_COLUMN}, '{path}')"
        value = f"json_extract({JSON_COLUMN}, '{path}')"
        rank = (
            f"CASE {kind} WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2 "
            "WHEN 'false' THEN 3 WHEN 'true' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 "
            "WHEN 'null' THEN 6 ELSE 7 END"
        )
        number = f"CASE WHEN {kind} IN ('integer', 'real', 'true', 'false') THEN {value} END"
        string = f"CASE WHEN {kind} = 'text' THEN {value} END"
        return rank, number, string
    node = f"({JSON_COLUMN} #> '{path}')"
    scalar = f"({JSON_COLUMN} #>> '{path}')"
    rank = (
        f"CASE jsonb_typeof({node}) WHEN 'number' THEN 1 WHEN 'string' THEN 2 "
        "WHEN 'boolean' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 WHEN 'null' THEN 6 "
        "ELSE 7 END"
    )
    number = (
        f"CASE jsonb_typeof({node}) WHEN 'number' THEN CAST({scalar} AS numeric) "
        f"WHEN 'boolean' THEN CASE WHEN {scalar} = 'true' THEN 1 ELSE 0 END END"
    )
    string = f"(CASE WHEN jsonb_typeof({node}) = 'string' THEN {scalar} END) COLLATE \"C\""
    return rank, number, string


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(moment: datetime) -> float:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidQuery(f"publication bounds must be timezone-aware datetimes, got {moment!r}")
    return moment.timestamp()


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _prepare(connection: Connection) -> None:
    # ilike on SQLite lower-cases with Python's Unicode str.lower (SQLite's own lower() and
    # LIKE fold ASCII only): a function registered once per pooled DB-API connection.
    if connection.dialect.name != "sqlite":
        return
    pooled = connection.connection
    if not pooled.info.get(SQLITE_LOWER):
        dbapi: Any = pooled.dbapi_connection
        dbapi.create_function(SQLITE_LOWER, 1, _lower, deterministic=True)
        pooled.info[SQLITE_LOWER] = True
