"""Bare account JIDs checked and normalised by RFC 7622's rules, without slixmpp.

Every command checks the account JIDs of its settings when it starts (a typo must stop it with
one line, before the database opens). slixmpp's ``JID`` does that, but importing it loads all of
slixmpp: a tenth of a second, a third of a cached ``get``'s start-up. Commands that never
connect use this instead; ``tests/unit/test_jid.py`` checks that it accepts, refuses and
normalises as slixmpp's ``JID`` does on a corpus of addresses.

The rules (RFC 7622 with the stringprep profiles slixmpp applies, RFC 3920's nodeprep and
nameprep): a localpart and a domainpart, no resourcepart; the localpart case-folded and
NFKC-normalised, without the characters ``"&'/:<>@``, spaces, controls and the other
prohibited code points; the domainpart an IDNA host name (or an IP literal), case-folded, each
label at most 63 characters (letters, digits, ``-`` and, as slixmpp allows, ``_``); each part
at most 1023 bytes.
"""

from __future__ import annotations

import ipaddress
import stringprep
import unicodedata

_FORBIDDEN_IN_LOCAL = frozenset("\"&'/:<>@")
_PROHIBITED = (
    stringprep.in_table_c11,
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)
MAX_PART = 1023


def bare_jid(text: str) -> str:
    """``text`` checked as a bare account JID and normalised; raises :class:`ValueError`
    saying what is wrong."""
    if "/" in text:
        raise ValueError(f"expected a bare JID like user@example.org, got {text!r}")
    local, at, domain = text.partition("@")
    if not at or not local:
        raise ValueError(f"expected a bare JID like user@example.org, got {text!r}")
    try:
        return f"{_localpart(local)}@{_domainpart(domain)}"
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid JID: {exc}") from None


def _fold(text: str) -> str:
    # stringprep's mapping (RFC 3454 B.1 and B.2) then NFKC, as nodeprep and nameprep do.
    mapped = "".join(
        stringprep.map_table_b2(char) for char in text if not stringprep.in_table_b1(char)
    )
    return unicodedata.normalize("NFKC", mapped)


def _localpart(local: str) -> str:
    folded = _fold(local)
    for char in folded:
        if char in _FORBIDDEN_IN_LOCAL or any(table(char) for table in _PROHIBITED):
            raise ValueError(f"the localpart may not contain {char!r}")
        if stringprep.in_table_a1(char):
            raise ValueError(f"the localpart holds an unassigned code point {char!r}")
    _check_bidi(folded)
    if not folded or len(folded.encode()) > MAX_PART:
        raise ValueError("the localpart must be 1 to 1023 bytes")
    return folded


def _domainpart(domain: str) -> str:
    # RFC 7622 section 3.2: a trailing dot is stripped (slixmpp 1.x strips it only sometimes).
    domain = domain.removesuffix(".")
    if not domain or len(domain.encode()) > MAX_PART:
        raise ValueError("the domainpart must be 1 to 1023 bytes")
    if domain.startswith("[") and domain.endswith("]"):
        ipaddress.IPv6Address(domain[1:-1])  # ValueError names what is wrong
        return domain.lower()
    try:
        ipaddress.IPv4Address(domain)
    except ValueError:
        pass
    else:
        return domain
    labels = []
    for label in domain.split("."):
        try:
            ascii_label = label.encode("idna").decode("ascii") if label else ""
        except UnicodeError:
            raise ValueError(f"the domain label {label!r} is not a valid host name") from None
        if not ascii_label or len(ascii_label) > 63:
            raise ValueError(f"the domain label {label!r} must be 1 to 63 characters")
        if (
            ascii_label.startswith("-")
            or ascii_label.endswith("-")
            or not all(char.isalnum() or char in "-_" for char in ascii_label)
        ):
            raise ValueError(f"the domain label {label!r} is not a valid host name")
        labels.append(_fold(label))
    return ".".join(labels)


def _check_bidi(text: str) -> None:
    # RFC 3454 section 6: no mixing of right-to-left and left-to-right characters, and a
    # right-to-left string starts and ends with right-to-left characters.
    if not any(stringprep.in_table_d1(char) for char in text):
        return
    if any(stringprep.in_table_d2(char) for char in text):
        raise ValueError("the localpart mixes right-to-left and left-to-right characters")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise ValueError("a right-to-left localpart must start and end right-to-left")
