"""Filters on an item's parsed JSON: one operator, one path, one value, as an SQL condition that
gives the same answer on SQLite (``json_extract``, ``json_type``, ``json_each``) and on
PostgreSQL (``#>``, ``#>>``, ``jsonb_typeof``, ``@>``).

Semantics, chosen so that both databases agree:

- a comparison only matches a value of the filter value's JSON type: ``lt 5`` never matches the
  string ``"4"``, ``eq true`` never matches the number 1;
- strings compare by code point (``COLLATE "C"`` on PostgreSQL, SQLite's BINARY);
- ``ne`` and ``not_in`` match only where the path holds a non-null value (SQL's NULL rule);
- ``exists`` (value ``true``, the default, or ``false``) is "the path holds a non-null value";
- ``contains`` (all of), ``overlap`` (any of) and ``disjoint`` (none of) apply to arrays of
  scalars; their value is a scalar or a list of scalars;
- ``like`` is case-sensitive, ``ilike`` compares after Unicode lower-casing (Python's
  ``str.lower`` on SQLite, ``lower()`` on PostgreSQL); ``%``, ``_`` and ``\\`` escapes as in SQL.

Values are always bound parameters; paths are validated literals (see :mod:`.paths`).

Indexed: on a path the parsers declare searchable (``SEARCHABLE_PATHS``), ``eq`` and ``in`` of
strings or numbers, ``contains`` and ``overlap`` read ``pubsub_item_key`` by (account, key,
value), as numbers for the first two (``pubsub_account``, ``key_code``); it holds exactly the
string and number values (and array elements, key ``path[]``) of those paths: the same answer
as the JSON condition, from the matching rows only. Other operators, paths and values
(booleans, null, a string too long for the index) are conditions on each of the account's
items, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa

from pubsub_cache.projector.parsers import SEARCHABLE_PATHS
from pubsub_cache.projector.schema import KEY_BYTES, key_code

from .errors import InvalidFilterValue, InvalidOperator
from .paths import JsonPath, parse_path

OPERATORS = (
    *("eq", "ne", "lt", "le", "gt", "ge", "between", "in", "not_in"),
    *("contains", "overlap", "disjoint", "like", "ilike", "exists"),
)
_COMPARISONS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
MAX_VALUES = 1000
MAX_TEXT = 1000
#: The parsed JSON, as the SQL of a search names it (query/search.py joins the content).
JSON_COLUMN = "pubsub_content.parsed"
SQLITE_LOWER = "pubsub_cache_lower"


@dataclass(frozen=True, slots=True)
class Filter:
    """``path op value``: e.g. ``Filter("author.name", "eq", "Juliet")``."""

    path: str
    op: str
    value: Any = True


class Params:
    """Bound parameters of one statement, named ``f0``, ``f1``..."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.indexed = False
        """Whether a condition read ``pubsub_item_key`` (the search then starts from it)."""

    def bind(self, value: Any) -> str:
        name = f"f{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def condition(spec: Filter, dialect: str, params: Params, *, account: str | None = None) -> str:
    """The SQL condition (text with ``:fN`` binds added to ``params``) for one filter; with the
    ``account`` searched, from the index where it serves (see the module's docstring)."""
    if spec.op not in OPERATORS:
        raise InvalidOperator(str(spec.path), str(spec.op), OPERATORS)
    path = parse_path(spec.path)
    side = _Sqlite(path, params) if dialect == "sqlite" else _Postgres(path, params)
    value = spec.value
    op = spec.op
    if account is not None and path.text in _SEARCHABLE:
        indexed = _indexed(path, op, value, dialect, params, account)
        if indexed is not None:
            params.indexed = True
            return indexed
    if op == "exists":
        if not isinstance(value, bool):
            raise InvalidFilterValue(path.text, op, f"expects true or false, got {value!r}")
        return side.exists() if value else f"NOT {side.exists()}"
    if op in ("eq", "ne"):
        equal = side.eq(_scalar(path, op, value))
        return equal if op == "eq" else f"({side.exists()} AND NOT {equal})"
    if op in _COMPARISONS:
        return side.compare(_COMPARISONS[op], _ordered(path, op, value))
    if op == "between":
        low, high = _pair(path, value)
        return f"({side.compare('>=', low)} AND {side.compare('<=', high)})"
    if op in ("in", "not_in"):
        values = _scalars(path, op, value, allow_one=False)
        any_of = "(" + " OR ".join(side.eq(v) for v in values) + ")"
        return any_of if op == "in" else f"({side.exists()} AND NOT {any_of})"
    if op in ("contains", "overlap", "disjoint"):
        return side.array(op, _scalars(path, op, value, allow_one=True))
    text = _text(path, op, value)
    return side.like(text) if op == "like" else side.ilike(text)


class _Sqlite:
    def __init__(self, path: JsonPath, params: Params) -> None:
        self.p = f"'{path.sqlite}'"
        self.x = f"json_extract({JSON_COLUMN}, {self.p})"
        self.t = f"json_type({JSON_COLUMN}, {self.p})"
        self.bind = params.bind

    def exists(self) -> str:
        return f"(coalesce({self.t}, 'null') <> 'null')"

    def eq(self, value: Any) -> str:
        return _sqlite_match(self.t, self.x, value, self.bind)

    def compare(self, symbol: str, value: str | float) -> str:
        guard = f"{self.t} = 'text'" if isinstance(value, str) else _SQLITE_NUMBER.format(self.t)
        return f"({guard} AND {self.x} {symbol} {self.bind(value)})"

    def array(self, op: str, values: list[Any]) -> str:
        source = f"json_each({JSON_COLUMN}, {self.p}) AS element"
        matches = [_sqlite_match("element.type", "element.value", v, self.bind) for v in values]
        if op == "contains":
            found = " AND ".join(f"EXISTS (SELECT 1 FROM {source} WHERE {m})" for m in matches)
        else:
            found = f"EXISTS (SELECT 1 FROM {source} WHERE {' OR '.join(matches)})"
        negate = "NOT " if op == "disjoint" else ""
        return f"({self.t} = 'array' AND {negate}({found}))"

    def like(self, pattern: str) -> str:
        return f"({self.t} = 'text' AND {self.x} GLOB {self.bind(like_to_glob(pattern))})"

    def ilike(self, pattern: str) -> str:
        lowered = f"{SQLITE_LOWER}({self.x}) LIKE {SQLITE_LOWER}({self.bind(pattern)})"
        return f"({self.t} = 'text' AND {lowered} ESCAPE '\\')"


_SQLITE_NUMBER = "{} IN ('integer', 'real')"


def _sqlite_match(kind: str, value_sql: str, value: Any, bind: Callable[[Any], str]) -> str:
    if value is None:
        return f"({kind} = 'null')"
    if isinstance(value, bool):
        return f"({kind} = '{'true' if value else 'false'}')"
    guard = f"{kind} = 'text'" if isinstance(value, str) else _SQLITE_NUMBER.format(kind)
    return f"({guard} AND {value_sql} = {bind(value)})"


class _Postgres:
    def __init__(self, path: JsonPath, params: Params) -> None:
        literal = f"'{path.postgres}'"
        self.x = f"({JSON_COLUMN} #> {literal})"
        self.s = f"({JSON_COLUMN} #>> {literal})"
        self.t = f"jsonb_typeof({self.x})"
        self.bind = params.bind

    def _json(self, value: Any) -> str:
        return f"CAST({self.bind(msgspec.json.encode(value).decode())} AS jsonb)"

    def exists(self) -> str:
        return f"(coalesce({self.t}, 'null') <> 'null')"

    def eq(self, value: Any) -> str:
        if value is None:
            return f"({self.t} = 'null')"
        return f"({self.x} = {self._json(value)})"

    def compare(self, symbol: str, value: str | float) -> str:
        if isinstance(value, str):
            return f"({self.t} = 'string' AND {self.s} COLLATE \"C\" {symbol} {self.bind(value)})"
        return f"({self.t} = 'number' AND {self.x} {symbol} {self._json(value)})"

    def array(self, op: str, values: list[Any]) -> str:
        if op == "contains":
            found = f"{self.x} @> {self._json(values)}"
        else:
            found = " OR ".join(f"{self.x} @> {self._json([v])}" for v in values)
        negate = "NOT " if op == "disjoint" else ""
        return f"({self.t} = 'array' AND {negate}({found}))"

    def like(self, pattern: str) -> str:
        return f"({self.t} = 'string' AND {self.s} LIKE {self.bind(pattern)})"

    def ilike(self, pattern: str) -> str:
        return f"({self.t} = 'string' AND lower({self.s}) LIKE lower({self.bind(pattern)}))"


_SEARCHABLE = frozenset(SEARCHABLE_PATHS)


def _indexed(
    path: JsonPath, op: str, value: Any, dialect: str, params: Params, account: str
) -> str | None:
    if op == "eq":
        values = [_scalar(path, op, value)]
    elif op == "in":
        values = _scalars(path, op, value, allow_one=False)
    elif op in ("contains", "overlap"):
        values = _scalars(path, op, value, allow_one=True)
    else:
        return None
    room = KEY_BYTES - len(account.encode("utf-8", "surrogatepass"))
    for v in values:
        if v is None or isinstance(v, bool):
            return None
        if isinstance(v, str) and len(v.encode("utf-8", "surrogatepass")) > room:
            return None
    key = key_code(SEARCHABLE_PATHS, path.text, element=op not in ("eq", "in"))
    if op == "contains":
        found = [_lookup(key, [v], dialect, params, account) for v in dict.fromkeys(values)]
        return "(" + " AND ".join(found) + ")"
    return _lookup(key, values, dialect, params, account)


def _lookup(key: int, values: list[Any], dialect: str, params: Params, account: str) -> str:
    """``pubsub_item.id IN`` the items of ``account`` holding one of ``values`` at ``key`` (a
    key_code); the account's number is looked up once, inside the statement."""
    number = f"(SELECT id FROM pubsub_account WHERE jid = {params.bind(account)})"
    where = f"account_id = {number} AND key = {params.bind(key)}"
    strings = [params.bind(v) for v in values if isinstance(v, str)]
    if dialect == "sqlite":
        numbers = [params.bind(v) for v in values if not isinstance(v, str)]
    else:  # the JSON spelling, read as numeric: what jsonb's own equality compares
        numbers = [
            f"CAST({params.bind(msgspec.json.encode(v).decode())} AS numeric)"
            for v in values
            if not isinstance(v, str)
        ]
    parts = [
        f"SELECT item_ref FROM pubsub_item_key WHERE {where} AND {column} IN ({', '.join(binds)})"
        for column, binds in (("value_text", strings), ("value_num", numbers))
        if binds
    ]
    return f"pubsub_item.id IN ({' UNION ALL '.join(parts)})"


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, ``\\`` escapes) as the equivalent, case-sensitive GLOB."""
    out: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(_glob_literal(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append(_glob_literal(char))
    return "".join(out)


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


def _scalar(path: JsonPath, op: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return _text(path, op, value) if isinstance(value, str) else value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidFilterValue(path.text, op, f"{value!r} is not a JSON number")
        return value
    raise InvalidFilterValue(path.text, op, f"expects a JSON scalar, got {type(value).__name__}")


def _ordered(path: JsonPath, op: str, value: Any) -> str | float:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidFilterValue(path.text, op, f"compares strings or numbers, got {value!r}")
    return _scalar(path, op, value)  # type: ignore[no-any-return]


def _pair(path: JsonPath, value: Any) -> tuple[str | float, str | float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidFilterValue(path.text, "between", f"expects [low, high], got {value!r}")
    low, high = (_ordered(path, "between", v) for v in value)
    if isinstance(low, str) != isinstance(high, str):
        raise InvalidFilterValue(
            path.text, "between", "low and high must both be strings or numbers"
        )
    return low, high


def _scalars(path: JsonPath, op: str, value: Any, *, allow_one: bool) -> list[Any]:
    if not isinstance(value, list | tuple):
        if not allow_one:
            raise InvalidFilterValue(path.text, op, f"expects a list of values, got {value!r}")
        value = [value]
    if not value or len(value) > MAX_VALUES:
        raise InvalidFilterValue(path.text, op, f"expects 1 to {MAX_VALUES} values")
    return [_scalar(path, op, v) for v in value]


def _text(path: JsonPath, op: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidFilterValue(path.text, op, f"expects a string, got {value!r}")
    if len(value) > MAX_TEXT:
        raise InvalidFilterValue(path.text, op, f"a value is at most {MAX_TEXT} characters")
    if "\x00" in value:
        raise InvalidFilterValue(path.text, op, "a value cannot hold a NUL character")
    if op in ("like", "ilike") and (len(value) - len(value.rstrip("\\"))) % 2:
        raise InvalidFilterValue(path.text, op, "the pattern ends with a lone escape '\\'")
    return value


def filter_clause(
    spec: Filter, dialect: str, params: Params, *, account: str | None = None
) -> sa.TextClause:
    """One filter as a Core text clause carrying the values it binds."""
    before = len(params.values)
    sql = condition(spec, dialect, params, account=account)
    names = list(params.values)[before:]
    return sa.text(sql).bindparams(*(sa.bindparam(name, params.values[name]) for name in names))
