"""Learning a service's order from a listing (xmpp/disco.py), for servers whose name says
nothing: the listing of items the cache saw published and re-published shows it."""

from __future__ import annotations

from pubsub_cache.xmpp.disco import order_from_listing

BY_CREATION = ["a", "b", "c"]
BY_MODIFICATION = ["b", "c", "a"]  # a was re-published


def test_a_listing_in_first_publication_order_says_creation() -> None:
    assert order_from_listing(["a", "b", "c", "d"], BY_CREATION, BY_MODIFICATION) == "creation"


def test_a_listing_in_last_publication_order_says_modification() -> None:
    listed = ["b", "c", "a", "d"]
    assert order_from_listing(listed, BY_CREATION, BY_MODIFICATION) == "modification"


def test_an_id_listed_twice_counts_at_its_last_place() -> None:
    listed = ["a", "b", "c", "a"]  # Prosody's memory store after a re-publication
    assert order_from_listing(listed, BY_CREATION, BY_MODIFICATION) == "modification"


def test_nothing_is_learned_without_a_re_publication_or_from_a_listing_matching_neither() -> None:
    assert order_from_listing(["a", "b"], ["a", "b"], ["a", "b"]) is None
    assert order_from_listing(["c", "a", "b"], BY_CREATION, BY_MODIFICATION) is None
    assert order_from_listing(["a"], BY_CREATION, BY_MODIFICATION) is None
