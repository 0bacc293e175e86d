"""Payload parsers: turn an item's payload element into JSON data and searchable text.

``BUILTIN_PARSERS`` holds one instance of each shipped parser; they are stateless, so sharing them
between analysers and threads is safe, and building the tuple does no work beyond allocation.
"""

from __future__ import annotations

from pubsub_cache.projector.parsers.base import ParsedPayload, Parser, parse_xep0082_datetime
from pubsub_cache.projector.parsers.microblog import MicroblogParser
from pubsub_cache.projector.parsers.pep import (
    AvatarMetadataParser,
    BookmarksParser,
    GeolocParser,
    TuneParser,
)

__all__ = [
    "BUILTIN_PARSERS",
    "SEARCHABLE_PATHS",
    "TEXT_KEYS",
    "AvatarMetadataParser",
    "BookmarksParser",
    "GeolocParser",
    "MicroblogParser",
    "ParsedPayload",
    "Parser",
    "TuneParser",
    "parse_xep0082_datetime",
]

BUILTIN_PARSERS: tuple[Parser, ...] = (
    MicroblogParser(),
    AvatarMetadataParser(),
    GeolocParser(),
    TuneParser(),
    BookmarksParser(),
)

SEARCHABLE_PATHS: tuple[str, ...] = tuple(
    sorted({path for parser in BUILTIN_PARSERS for path in getattr(parser, "searchable", ())})
)
"""The parsed paths that search answers from the ``pubsub_item_key`` index, whichever parser
wrote the item: the union of the built-in parsers' ``searchable`` declarations."""

TEXT_KEYS: tuple[str, ...] = tuple(
    sorted({key for parser in BUILTIN_PARSERS for key in getattr(parser, "text_keys", ())})
)
"""The top-level keys of the parsed JSON whose strings make an item's searchable text when the
parser's text is exactly those (``projector/search_text.py``): the union of the built-in
parsers' ``text_keys`` declarations. Changing them takes a migration (the SQLite triggers and
view hold them, as 0012 made them)."""
