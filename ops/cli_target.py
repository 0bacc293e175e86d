"""Which node a command means, said as a Libervia user would: ``SERVICE NODE`` (today's form),
``-s SERVICE -n NODE``, ``-n NODE`` alone for the account's own PEP service, or an ``xmpp:`` URI
(XEP-0147: ``xmpp:pubsub.example.org?;node=blog;item=first``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import click


@dataclass(frozen=True)
class Target:
    """A node of a service, and maybe one item of it."""

    service: str
    node: str
    item: str | None = None


def parse_xmpp_uri(uri: str) -> tuple[str, dict[str, str]]:
    """The JID and the ``key=value`` parameters of an ``xmpp:`` URI (RFC 5122, XEP-0147)."""
    body = uri.removeprefix("xmpp:").removeprefix("//")
    jid, _, query = body.partition("?")
    parameters: dict[str, str] = {}
    for part in query.split(";")[1:]:  # the first part is the action (pubsub, or none)
        key, equals, value = part.partition("=")
        if not equals:
            continue
        parameters[unquote(key)] = unquote(value)
    jid = unquote(jid)
    if not jid:
        raise click.BadParameter(f"no JID in the URI {uri!r}")
    return jid, parameters


WORDS = click.argument("words", nargs=-1, metavar="[SERVICE] NODE | XMPP-URI")
SERVICE = click.option(
    "-s", "--service", "service_option", help="The service [default: the account's own PEP]."
)
NODE = click.option("-n", "--node", "node_option", help="The node (instead of NODE).")


def resolve(
    words: Sequence[str], *, service: str | None, node: str | None, own: str | None
) -> Target:
    """The target named by positional ``words`` and the ``-s``/``-n`` options; the service
    defaults to ``own`` (the account's PEP service)."""
    item = None
    rest = list(words)
    if rest and rest[0].startswith("xmpp:"):
        jid, parameters = parse_xmpp_uri(rest.pop(0))
        service = service or jid
        node = node or parameters.get("node")
        item = parameters.get("item")
    if node is None and rest:
        node = rest.pop()
    if service is None and rest:
        service = rest.pop()
    if rest:
        raise click.UsageError(f"unexpected argument {rest[0]!r}: give SERVICE NODE at most")
    if node is None:
        raise click.UsageError("which node? give SERVICE NODE, -n NODE or an xmpp: URI")
    service = service or own
    if service is None:
        raise click.UsageError("which service? give -s SERVICE (no account for its own PEP)")
    return Target(service, node, item)
