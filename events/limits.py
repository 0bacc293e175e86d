"""What the codec enforces when it decodes an event, checked when the event is built (invariant 11).

msgspec checks a field's type, its ``Annotated`` constraints (a string's ``min_length`` and
``max_length``, counted in characters; a list's length; a timezone-aware datetime) and a
``Literal``'s values only when it *decodes*: a Struct built in Python is taken as given. An event
breaking them would be encoded and appended, then never decode again: every later event of its
node parked behind it, export and compaction stopped at it. So each Struct of the log calls
:func:`struct_problem` from its ``__post_init__``, which applies the rules msgspec will apply,
read from msgspec's own description of the type (``msgspec.inspect``): one set of limits, never
a copy that could drift from the decoder. The rules of a class are compiled once, on first use.

Pinned by ``tests/unit/test_event_limits.py``: for every event type, a value just past each limit
is refused when built, and everything that can be built decodes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime

import msgspec
import msgspec.inspect as mi

#: The longest JID, node name or item id an event may hold, in characters (as msgspec counts
#: ``max_length``): RFC 7622 caps a JID at 3071 bytes, and servers cap ids and names below that.
MAX_TEXT = 3071

Check = Callable[[object], str | None]
"""A compiled rule: the problem with a value (``"must be ..., got ..."``), or ``None``."""

_RULES: dict[type, tuple[tuple[str, Check], ...]] = {}


def struct_problem(struct: msgspec.Struct) -> str | None:
    """The first field of ``struct`` that would not decode, as ``"<field> must ..."``."""
    cls = type(struct)
    rules = _RULES.get(cls)
    if rules is None:
        rules = _RULES[cls] = compile_rules(cls)
    for name, check in rules:
        problem = check(getattr(struct, name))
        if problem is not None:
            return f"{name} {problem}"
    return None


def compile_rules(cls: type[msgspec.Struct]) -> tuple[tuple[str, Check], ...]:
    """The rule of each field of ``cls``; raises ``TypeError`` for a type it cannot check."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return tuple((field.name, _compile(field.type)) for field in info.fields)


def describe(value: object) -> str:
    """``value`` for an error message: a long string is cut, with its length."""
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({type(value).__name__})"


def _compile(t: mi.Type) -> Check:
    match t:
        case mi.StrType():
            return _string(t)
        case mi.IntType():
            return _number(t, int)
        case mi.FloatType():
            return _number(t, float)
        case mi.BoolType():
            return _kind(lambda v: type(v) is bool, "must be a bool")
        case mi.NoneType():
            return _kind(lambda v: v is None, "must be None")
        case mi.AnyType():
            return lambda v: None
        case mi.LiteralType(values=values):
            allowed = frozenset(values)
            text = ", ".join(repr(v) for v in values)
            return _kind(lambda v: type(v) in (str, int) and v in allowed, f"must be one of {text}")
        case mi.DateTimeType(tz=tz):
            return _datetime(tz)
        case mi.StructType(cls=struct_cls):
            # A Struct checked its own fields when it was built.
            return _kind(lambda v: type(v) is struct_cls, f"must be a {struct_cls.__name__}")
        case mi.ListType():
            return _list(t)
        case mi.DictType():
            return _dict(t)
        case mi.UnionType(types=types):
            return _union([_compile(member) for member in types])
    raise TypeError(f"no construction check for {t!r}: teach events/limits.py about it")


def _kind(test: Callable[[object], bool], problem: str) -> Check:
    return lambda v: None if test(v) else f"{problem}, got {describe(v)}"


def _string(t: mi.StrType) -> Check:
    low, high = t.min_length or 0, t.max_length
    pattern = re.compile(t.pattern) if t.pattern is not None else None
    if low == 1 and high is not None:
        what = f"must be a non-empty string of at most {high} characters"
    elif low or high is not None:
        what = f"must be a string of {low} to {high if high is not None else 'any'} characters"
    else:
        what = "must be a string"

    def check(v: object) -> str | None:
        if type(v) is not str or len(v) < low or (high is not None and len(v) > high):
            return f"{what}, got {describe(v)}"
        if pattern is not None and not pattern.search(v):
            return f"must match {pattern.pattern!r}, got {describe(v)}"
        return None

    return check


def _number(t: mi.IntType | mi.FloatType, kind: type) -> Check:
    types = (int,) if kind is int else (int, float)
    bounds = [
        (bound, holds, sign)
        for bound, holds, sign in (
            (t.ge, operator.ge, ">="),
            (t.gt, operator.gt, ">"),
            (t.le, operator.le, "<="),
            (t.lt, operator.lt, "<"),
        )
        if bound is not None
    ]

    def check(v: object) -> str | None:
        if not isinstance(v, int | float) or type(v) not in types:
            return f"must be {'an int' if kind is int else 'a number'}, got {describe(v)}"
        for bound, holds, sign in bounds:
            if not holds(v, bound):
                return f"must be {sign} {bound}, got {v!r}"
        if t.multiple_of is not None and v % t.multiple_of:
            return f"must be a multiple of {t.multiple_of}, got {v!r}"
        return None

    return check


def _datetime(tz: bool | None) -> Check:
    def check(v: object) -> str | None:
        if not isinstance(v, datetime):
            return f"must be a datetime, got {describe(v)}"
        if tz is True and v.tzinfo is None:
            return f"must be a timezone-aware datetime, got {v!r}"
        if tz is False and v.tzinfo is not None:
            return f"must be a naive datetime, got {v!r}"
        return None

    return check


def _list(t: mi.ListType) -> Check:
    low, high, item = t.min_length or 0, t.max_length, _compile(t.item_type)
    what = "must be a non-empty list" if low == 1 and high is None else "must be a list"
    if low > 1 or high is not None:
        what = f"must be a list of {low} to {high if high is not None else 'any'} elements"
    element = (
        f"must be {t.item_type.cls.__name__} structs"
        if isinstance(t.item_type, mi.StructType)
        else "elements"
    )

    def check(v: object) -> str | None:
        if type(v) is not list or len(v) < low or (high is not None and len(v) > high):
            return f"{what}, got {describe(v)}"
        for index, value in enumerate(v):
            problem = item(value)
            if problem is not None:
                if element != "elements":
                    return f"{element}, got {describe(value)}"
                return f"[{index}] {problem}"
        return None

    return check


def _dict(t: mi.DictType) -> Check:
    low, high = t.min_length or 0, t.max_length
    key, value = _compile(t.key_type), _compile(t.value_type)

    def check(v: object) -> str | None:
        if type(v) is not dict or len(v) < low or (high is not None and len(v) > high):
            return f"must be a dict of {low} to {high or 'any'} entries, got {describe(v)}"
        for k, x in v.items():
            problem = key(k) or value(x)
            if problem is not None:
                return f"[{describe(k)}] {problem}"
        return None

    return check


def _union(members: list[Check]) -> Check:
    def check(v: object) -> str | None:
        problems = []
        for member in members:
            problem = member(v)
            if problem is None:
                return None
            problems.append(problem)
        # The problem of the member the value was meant for: not "must be None".
        return next((p for p in problems if not p.startswith("must be None")), problems[0])

    return check
