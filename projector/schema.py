"""The read model the projector owns: nodes, items, checkpoints, parked events, counters.

Declared on the project's one :data:`~pubsub_cache.events.schema.metadata`. Times are Unix
seconds (floats) in every table: portable between SQLite and PostgreSQL, cheap to compare and
sort; the query library turns them into aware datetimes. ``*_position`` columns name the log
position that created or last changed a row, which keeps rows traceable to their events.

Full-text search is not declared here: it is dialect-specific (an FTS5 table kept by triggers on
SQLite, a GIN index on the ``tsvector`` expression itself on PostgreSQL, so the text is not
stored twice: migration 0008) and created by the migrations; the autogenerate comparison ignores
it (see ``migrations/api.py``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import sqlalchemy as sa

from pubsub_cache.events.schema import Position, metadata

from .jsontype import JSONType

SYNC_STATES = ("NONE", "IN_PROGRESS", "COMPLETED", "PARTIAL", "ERROR")


@dataclass(frozen=True)
class ReadModel:
    """The tables the apply rules write: the live ones, or the shadow ones of a rebuild."""

    node: sa.Table
    item: sa.Table
    counter: sa.Table
    """Counters kept by the projector, e.g. rejected notifications (``rejected``) per account."""
    content: sa.Table
    """The payloads and what their parser derives from them alone, once per distinct content."""


def _read_model(metadata: sa.MetaData, prefix: str) -> ReadModel:
    node = sa.Table(
        f"{prefix}pubsub_node",
        metadata,
        sa.Column("id", Position, primary_key=True, autoincrement=True),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("analyser", sa.String(64)),
        sa.Column("type", sa.String(64)),
        sa.Column("subtype", sa.String(64)),
        sa.Column("to_sync", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("sync_state", sa.String(16), nullable=False, server_default="NONE"),
        sa.Column("sync_reason", sa.Text, comment="why PARTIAL or ERROR"),
        sa.Column("sync_at", sa.Float, comment="when sync_state last changed"),
        sa.Column("sync_id", sa.Text, comment="the sync in progress or last finished"),
        sa.Column("sync_position", sa.BigInteger, comment="log position of the SyncStarted"),
        sa.Column("sync_requested_position", sa.BigInteger, comment="pending SyncRequested"),
        sa.Column("subscribed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("subscription", sa.String(16)),
        sa.Column("configuration", JSONType),
        sa.Column("max_items", sa.Integer, comment="the node's pubsub#max_items, when known"),
        sa.Column("notify_retract", sa.Boolean, comment="pubsub#notify_retract, when known"),
        sa.Column(
            "item_order", sa.String(16), comment="how the service lists items (ServiceOrder)"
        ),
        sa.Column("item_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("redirect", sa.Text),
        sa.Column("created_position", sa.BigInteger, nullable=False),
        sa.Column("updated_position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("account", "service", "node"),
        sa.CheckConstraint(f"sync_state IN {SYNC_STATES!r}", name="sync_state"),
    )

    item = sa.Table(
        f"{prefix}pubsub_item",
        metadata,
        sa.Column("id", Position, primary_key=True, autoincrement=True),
        sa.Column(
            "node_id",
            Position,
            sa.ForeignKey(f"{prefix}pubsub_node.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("publisher", sa.Text),
        sa.Column(
            "content_id",
            Position,
            comment=f"{prefix}pubsub_content.id; NULL if notify-only (no payload)",
        ),
        sa.Column("text", sa.Text, comment="plain text the parser extracted, for full-text search"),
        sa.Column("published_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("created_position", sa.BigInteger, nullable=False),
        sa.Column("updated_position", sa.BigInteger, nullable=False),
        sa.Column("synced_by", sa.Text, comment="sync_id of the last sync page holding the item"),
        sa.Column(
            "creation_rank",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="place in the order of first publication (projector/ranks.py)",
        ),
        sa.Column(
            "modification_rank",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="place in the order of last publication",
        ),
        sa.Column(
            "service_rank",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="place in the service's own order (one of the two above)",
        ),
        sa.UniqueConstraint("node_id", "item_id"),
        sa.Index(f"ix_{prefix}pubsub_item_node_creation", "node_id", "creation_rank", "id"),
        sa.Index(f"ix_{prefix}pubsub_item_node_modification", "node_id", "modification_rank", "id"),
        sa.Index(f"ix_{prefix}pubsub_item_node_service", "node_id", "service_rank", "id"),
        sa.Index(f"ix_{prefix}pubsub_item_node_published", "node_id", "published_at"),
        sa.Index(f"ix_{prefix}pubsub_item_content_id", "content_id"),
    )

    # Content-addressed (migration 0010): the views of one public node by N local accounts hold
    # N items and one content row per distinct payload. ``digest`` covers the parser, its
    # version and the payload (projector/payloads.py content_digest): a new parser version makes
    # new rows. No foreign key from pubsub_item: the projector locks what it references and
    # collects what nothing references (projector/contents.py).
    content = sa.Table(
        f"{prefix}pubsub_content",
        metadata,
        sa.Column("id", Position, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.LargeBinary(16), nullable=False, unique=True),
        sa.Column("parser", sa.String(64)),
        sa.Column("parser_version", sa.Integer),
        sa.Column("parse_error", sa.Text),
        sa.Column("parsed", JSONType, comment="the parser's JSON; NULL if none or parse failed"),
        sa.Column("payload", sa.Text, nullable=False, comment="raw XML of the payload element"),
    )

    counter = sa.Table(
        f"{prefix}pubsub_counter",
        metadata,
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
    )
    return ReadModel(node, item, counter, content)


LIVE = _read_model(metadata, "")
pubsub_node, pubsub_item, pubsub_counter = LIVE.node, LIVE.item, LIVE.counter
pubsub_content = LIVE.content

#: Prefix of the shadow tables a rebuild fills before swapping them in (``replay``).
SHADOW_PREFIX = "rebuild_"


@functools.cache
def shadow_read_model(dialect: str = "sqlite") -> ReadModel:
    """The shadow tables, declared on a metadata of their own (the migrations do not own them).

    On SQLite the swap renames the shadow tables into place, so their constraints carry the
    live tables' names (constraint names are not schema objects there; index names are, and
    stay prefixed). On PostgreSQL constraint names must be unique and the swap copies rows.
    """
    if dialect != "sqlite":
        return _read_model(sa.MetaData(naming_convention=metadata.naming_convention), SHADOW_PREFIX)

    def base(constraint: sa.Constraint, table: sa.Table) -> str:
        return table.name.removeprefix(SHADOW_PREFIX)

    def referred(constraint: sa.Constraint, table: sa.Table) -> str:
        assert isinstance(constraint, sa.ForeignKeyConstraint)
        return str(constraint.referred_table.name).removeprefix(SHADOW_PREFIX)

    convention = {
        key: str(value)
        .replace("%(table_name)s", "%(base)s")
        .replace("%(referred_table_name)s", "%(referred)s")
        for key, value in metadata.naming_convention.items()
        if isinstance(value, str)
    }
    return _read_model(
        sa.MetaData(naming_convention={**convention, "base": base, "referred": referred}),
        SHADOW_PREFIX,
    )


projector_checkpoint = sa.Table(
    "projector_checkpoint",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True, comment="projector or partition"),
    sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires", sa.Float),
    sa.Column("updated_at", sa.Float),
)

parked_event = sa.Table(
    "parked_event",
    metadata,
    sa.Column("id", Position, primary_key=True, autoincrement=True),
    sa.Column("projector", sa.String(128), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("service", sa.Text, nullable=False),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("parked_at", sa.Float, nullable=False),
    sa.UniqueConstraint("projector", "position"),
    sa.Index("ix_parked_event_scope", "projector", "account", "service", "node"),
)

# One ingest per account (xmpp/lease.py): the process holding an account's row ingests it.
ingest_lease = sa.Table(
    "ingest_lease",
    metadata,
    sa.Column("account", sa.Text, primary_key=True, comment="the bare JID ingested"),
    sa.Column("owner", sa.Text, nullable=False, comment="host:pid:token[:pidns] holding it"),
    sa.Column("expires", sa.Float, nullable=False, comment="Unix time; renewed while held"),
)

# The accounts of the read model, numbered: ``pubsub_item_key`` rows carry the number instead of
# the JID (one small integer in every key row and both of its indexes, not ~20 bytes twice).
# Filled by a trigger on pubsub_node inserts (migration 0009), so every writer of nodes keeps it;
# rows are never removed (an account that comes back keeps its number).
pubsub_account = sa.Table(
    "pubsub_account",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("jid", sa.Text, nullable=False, unique=True, comment="pubsub_node.account"),
)

#: Fills ``pubsub_account`` from the nodes there are (a SQLite rebuild's swap, whose shadow
#: nodes were written without the trigger). ``WHERE true``: SQLite's parser needs it before
#: ``ON CONFLICT`` in an INSERT ... SELECT.
ACCOUNT_FILL = (
    "INSERT INTO pubsub_account (jid) SELECT DISTINCT account FROM pubsub_node WHERE true "
    "ON CONFLICT (jid) DO NOTHING"
)

# Search over parsed keys (query/search.py): one row per value of each searchable path of an
# item (projector/parsers SEARCHABLE_PATHS), and one per scalar element when the value is an
# array (key ``path[]``: tags become an indexed set). Rows are derived from pubsub_item.parsed
# by triggers the migrations create (item_key_select below, frozen in 0010), so every writer of
# pubsub_item (the projector, a rebuild's copy, a test) keeps them; no foreign key, so that a
# SQLite rebuild can rename pubsub_item away (the swap derives them again). Not in the digest:
# they are a function of the rows it covers.
#
# Narrow rows (migration 0009): the account and the key are small integers (pubsub_account.id,
# :func:`key_code`), and the fixed-width columns come first so PostgreSQL pads none of them. The
# value indexes leave item_ref out, so that PostgreSQL's B-tree deduplication can merge the
# entries of one value (a search reads item_ref from the rows it finds).
pubsub_item_key = sa.Table(
    "pubsub_item_key",
    metadata,
    sa.Column("item_ref", Position, nullable=False, comment="pubsub_item.id"),
    sa.Column("account_id", sa.Integer, nullable=False, comment="pubsub_account.id"),
    sa.Column("key", sa.SmallInteger, nullable=False, comment="the path's key_code"),
    sa.Column("value_num", sa.Numeric, comment="a number value"),
    sa.Column("value_text", sa.Text, comment="a string value"),
    sa.Index("ix_pubsub_item_key_text", "account_id", "key", "value_text"),
    # Partial (WHERE value_num IS NOT NULL) on both engines, as migration 0009 creates it; not
    # said here: a ``postgresql_where`` would import SQLAlchemy's PostgreSQL dialect into every
    # program that reads the schema, SQLite's included (tests/cli/test_startup.py pins both).
    sa.Index("ix_pubsub_item_key_number", "account_id", "key", "value_num"),
    sa.Index("ix_pubsub_item_key_item", "item_ref"),
)

#: A string is indexed when its bytes and the account's fit in this (PostgreSQL's B-tree keeps
#: entries under ~2.7 kB); a longer one is searched without the index. (The account's bytes
#: count still, though the rows hold its number: which strings are indexed did not change.)
KEY_BYTES = 2000


def key_code(paths: tuple[str, ...], path: str, *, element: bool) -> int:
    """The number ``pubsub_item_key.key`` holds for ``path`` (``path[]`` with ``element``): its
    place in the searchable ``paths`` (sorted), twice, plus one for array elements. Changing the
    paths takes a migration that derives every key row again (the codes move)."""
    return 2 * paths.index(path) + int(element)


def item_key_select(dialect: str, paths: tuple[str, ...], *, trigger: bool) -> str:
    """The SELECT of ``pubsub_item_key`` rows (in the table's column order): of the item a trigger
    fires for (``new``), or of every item (``trigger=False``, to fill the table). ``paths`` are
    dotted keys (``author.name``).

    Migration 0010 holds a copy (revision scripts import nothing from the app); a test checks
    that both agree.
    """
    if any(
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*", p) for p in paths
    ):
        raise ValueError(f"searchable paths are dotted keys, got {paths!r}")
    row = "new" if trigger else "i"
    # The parsed JSON is the item's content's (migration 0010): contents never change, so the
    # triggers fire on the item's content_id alone.
    if trigger:
        source = (
            "pubsub_node AS n JOIN pubsub_account AS a ON a.jid = n.account "
            "JOIN pubsub_content AS c ON c.id = new.content_id"
        )
        where = "n.id = new.node_id AND c.parsed IS NOT NULL"
    else:
        source = (
            "pubsub_item AS i JOIN pubsub_node AS n ON n.id = i.node_id "
            "JOIN pubsub_account AS a ON a.jid = n.account "
            "JOIN pubsub_content AS c ON c.id = i.content_id"
        )
        where = "c.parsed IS NOT NULL"
    if dialect == "sqlite":
        table = " UNION ALL ".join(
            f"SELECT {key_code(paths, p, element=False)} AS key, '$.{p}' AS path" for p in paths
        )
        kind = "json_type(c.parsed, p.path)"
        value = "json_extract(c.parsed, p.path)"

        def fits(text: str) -> str:
            return f"length(CAST(n.account AS BLOB)) + length(CAST({text} AS BLOB)) <= {KEY_BYTES}"

        scalars = (
            f"SELECT {row}.id, a.id, p.key, CASE WHEN {kind} IN ('integer', 'real') THEN {value} "
            f"END, CASE WHEN {kind} = 'text' THEN {value} END "
            f"FROM {source}, ({table}) AS p WHERE {where} "
            f"AND ({kind} IN ('integer', 'real') OR ({kind} = 'text' AND {fits(value)}))"
        )
        elements = (
            f"SELECT {row}.id, a.id, p.key + 1, "
            "CASE WHEN e.type IN ('integer', 'real') THEN e.value END, "
            "CASE WHEN e.type = 'text' THEN e.value END "
            f"FROM {source}, ({table}) AS p, json_each(c.parsed, p.path) AS e "
            f"WHERE {where} AND {kind} = 'array' "
            f"AND (e.type IN ('integer', 'real') OR (e.type = 'text' AND {fits('e.value')}))"
        )
        return f"{scalars} UNION ALL {elements}"
    table = ", ".join(
        f"({key_code(paths, p, element=False)}, '{{{p.replace('.', ',')}}}'::text[])" for p in paths
    )
    found = "c.parsed #> p.path"
    text = "k.value #>> '{}'"
    values = (
        f"SELECT p.key, {found} AS value FROM (VALUES {table}) AS p(key, path) "
        f"UNION ALL SELECT p.key + 1, e.value FROM (VALUES {table}) AS p(key, path), "
        f"jsonb_array_elements(CASE WHEN jsonb_typeof({found}) = 'array' THEN {found} "
        "ELSE '[]'::jsonb END) AS e(value)"
    )
    return (
        f"SELECT {row}.id, a.id, k.key, "
        f"CASE WHEN jsonb_typeof(k.value) = 'number' THEN CAST({text} AS numeric) END, "
        f"CASE WHEN jsonb_typeof(k.value) = 'string' THEN {text} END "
        f"FROM {source}, LATERAL ({values}) AS k WHERE {where} "
        "AND (jsonb_typeof(k.value) = 'number' OR (jsonb_typeof(k.value) = 'string' "
        f"AND octet_length(n.account) + octet_length({text}) <= {KEY_BYTES}))"
    )


# Each account an ingest daemon serves and where its session stands (xmpp/accounts.py writes it,
# ``pubsub-cache status`` and /metrics read it): the daemon is another process than the status.
ingest_account = sa.Table(
    "ingest_account",
    metadata,
    sa.Column("account", sa.Text, primary_key=True, comment="the bare JID served"),
    sa.Column("owner", sa.Text, nullable=False, comment="the process serving it (ingest_lease)"),
    sa.Column(
        "state",
        sa.Text,
        nullable=False,
        comment="connecting, connected, standing-by, failed or stopped",
    ),
    sa.Column("reason", sa.Text, comment="why: the failure, the lease's holder"),
    sa.Column("since", sa.Float, nullable=False, comment="Unix time it entered the state"),
)
