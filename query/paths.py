"""Paths into an item's parsed JSON, and their SQL spelling on SQLite and PostgreSQL.

Grammar (nothing else is accepted)::

    path    = key ( "." key | "[" index "]" )*
    key     = [A-Za-z_] [A-Za-z0-9_-]*          at most 64 characters
    index   = "0" | [1-9] [0-9]*                 at most 6 digits

e.g. ``author.name``, ``tags``, ``links[0].href``, ``in_reply_to[0].ref``. A path has at most
16 steps and 256 characters.

Paths become SQL literals (``'$.links[0].href'`` on SQLite, ``'{links,0,href}'`` on
PostgreSQL), not bound parameters: an expression index on ``json_extract(parsed, '$.title')``
is only used by a query that spells the same literal. That is safe because the grammar admits no
quote, backslash, comma, brace or space; values are always bound parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidPath

MAX_LENGTH = 256
MAX_STEPS = 16

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_INDEX = re.compile(r"\[(0|[1-9][0-9]{0,5})\]")
_KEY_CHAR = re.compile(r"[A-Za-z0-9_-]")
_SAFE = re.compile(r"[A-Za-z0-9_\-.\[\]]*")


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A validated path: its text and its steps (keys as ``str``, array indexes as ``int``)."""

    text: str
    steps: tuple[str | int, ...]

    @property
    def sqlite(self) -> str:
        """The SQLite JSON path, e.g. ``$.links[0].href``."""
        parts = ["$"]
        for step in self.steps:
            parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
        return "".join(parts)

    @property
    def postgres(self) -> str:
        """The PostgreSQL text-array path, e.g. ``{links,0,href}``."""
        return "{" + ",".join(str(step) for step in self.steps) + "}"


def parse_path(text: object) -> JsonPath:
    """``text`` as a :class:`JsonPath`, or :class:`InvalidPath` saying what is wrong where."""
    if not isinstance(text, str):
        raise InvalidPath(repr(text), "a path is text")
    if not text:
        raise InvalidPath(text, "empty")
    if len(text) > MAX_LENGTH:
        raise InvalidPath(text[:40] + "...", f"longer than {MAX_LENGTH} characters")
    steps: list[str | int] = []
    at = 0
    while at < len(text):
        if steps:
            if text[at] == ".":
                at += 1
            elif text[at] == "[":
                index = _INDEX.match(text, at)
                if index is None:
                    raise InvalidPath(text, f"bad array index at character {at + 1}")
                steps.append(int(index.group(1)))
                at = index.end()
                continue
            else:
                raise InvalidPath(text, f"expected '.' or '[' at character {at + 1}")
        key = _KEY.match(text, at)
        if key is None:
            expected = "a key (a letter or '_', then letters, digits, '_' or '-')"
            raise InvalidPath(text, f"expected {expected} at character {at + 1}")
        steps.append(key.group())
        at = key.end()
        if at < len(text) and _KEY_CHAR.match(text, at):
            raise InvalidPath(text, f"a key is at most 64 characters (character {at + 1})")
    if len(steps) > MAX_STEPS:
        raise InvalidPath(text, f"more than {MAX_STEPS} steps")
    if _SAFE.fullmatch(text) is None:  # belt and braces: the grammar already ensures it
        raise InvalidPath(text, "unexpected character")
    return JsonPath(text, tuple(steps))
