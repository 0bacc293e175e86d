"""The searchable text of an item, stored only when the parsed JSON cannot give it back.

A parser returns plain text for full-text search beside its JSON data. For the built-in parsers
that text is strings of the data itself: a microblog entry's title, content and tags, a tune's
artist, title and source. Storing it in ``pubsub_item.text`` kept it twice, once there and once
in the JSON (``bench disk``: 350 of ~3,100 bytes an item).

On SQLite the text is now derived when it can be (migration 0012): ``text`` is NULL when the
text's lines are the strings the JSON holds under :data:`TEXT_KEYS` (:func:`is_derived`), and
holds the parser's text otherwise (the empty string included, so that NULL always means
"derived"). The view ``pubsub_item_text`` gives every item's text either way; the FTS5 table
(contentless) is filled from it, and its triggers index the same expression.

PostgreSQL keeps the text in every row: its GIN index is built on an expression of the item
row (narrowed by node inside the index), and a lossy bitmap scan computes it again from the row.
The view exists there too, over the column alone, so that readers ask one place on both engines.

Which strings count: those of a top-level key in :data:`TEXT_KEYS`, the key's own value or the
strings of its array, in any order, as lines. The comparison is on lines, not on their order:
FTS5 keeps no positions here (``detail=column``, migration 0011), so the same lines give the
same index whatever their order, and a line never yields a token across its end.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from pubsub_cache.projector.parsers import TEXT_KEYS

__all__ = ["TEXT_KEYS", "derived_text", "derived_text_sql", "is_derived", "pubsub_item_text"]

#: Every item's searchable text (migration 0012): stored or derived on SQLite, stored on
#: PostgreSQL. A view, not part of the metadata (``create_all`` makes no table of it).
pubsub_item_text = sa.table(
    "pubsub_item_text", sa.column("id"), sa.column("text", sa.Text), sa.column("node_id")
)


#: JSON values that hold no string of the item's text (SQL reads only strings: ``'text'``).
_OTHER_JSON = (int, float, bool, type(None), dict, list)


def derived_text(data: dict[str, Any]) -> str | None:
    """The text the JSON ``data`` gives back: its strings under :data:`TEXT_KEYS`, one a line,
    in the data's order (the order :func:`derived_text_sql` reads them in). ``None`` when a
    value there is neither JSON nor a list of JSON values (a ``datetime``...): the stored JSON
    would hold a string that this does not see."""
    found: list[str] = []
    for key, value in data.items():
        if key not in TEXT_KEYS:
            continue
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for element in value:
                if isinstance(element, str):
                    found.append(element)
                elif not isinstance(element, _OTHER_JSON):
                    return None
        elif not isinstance(value, _OTHER_JSON):
            return None
    return "\n".join(found)


def is_derived(text: str, data: dict[str, Any]) -> bool:
    """Whether the parser's ``text`` and the one ``data`` gives back have the same lines (empty
    ones aside), each as many times: then they index the same words."""
    derived = derived_text(data)
    if derived is None:
        return False
    return text == derived or _lines(text) == _lines(derived)


def _lines(text: str) -> Counter[str]:
    return Counter(line for line in text.split("\n") if line)


def derived_text_sql(content_id: str) -> str:
    """SQLite: the text the content ``content_id`` (an SQL expression) gives back, as
    :func:`derived_text` (NULL when there is none).

    Migration 0012 holds a copy (revision scripts import nothing from the app); a test checks
    that both agree.
    """
    keys = ", ".join(f"'{key}'" for key in TEXT_KEYS)
    return (
        "(SELECT group_concat(coalesce(a.value, t.value), char(10)) "
        "FROM pubsub_content AS c, json_each(c.parsed) AS t "
        "LEFT JOIN json_each(CASE WHEN t.type = 'array' THEN t.value END) AS a "
        f"WHERE c.id = {content_id} AND t.key IN ({keys}) "
        "AND (t.type = 'text' OR a.type = 'text'))"
    )
