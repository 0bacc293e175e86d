"""pubsub-cache: an event-sourced cache of XMPP publish-subscribe (XEP-0060) nodes and items.

The distribution maps the project's top-level folders onto this package:
``pubsub_cache.events`` (event types, codec, event log), ``.projector`` (read model),
``.query`` (client library), ``.xmpp`` (slixmpp adapter and ingest), ``.migrations`` and ``.ops``
(command line, settings, benchmarks). Importing any of them builds nothing.
"""

__version__ = "0.1.0"
