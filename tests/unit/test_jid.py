"""Our bare-JID check (ops/jid.py) accepts, refuses and normalises as slixmpp's ``JID`` does,
without importing slixmpp (it costs a tenth of a second at every command's start)."""

from __future__ import annotations

import pytest
from slixmpp.jid import JID, InvalidJID

from pubsub_cache.ops.jid import bare_jid

CORPUS = [
    "romeo@montague.lit",
    "Romeo@Montague.LIT",
    "élise@exämple.org",
    "a@EXÄMPLE.org",
    "ΣΑΣ@x",
    "ǅ@x",
    "ﬀ@x",
    "a\u200b@x",
    "a@[::1]",
    "a@127.0.0.1",
    "a@localhost",
    "a@ex_ample.org",
    "a@xn--exmple-cua.org",
    "a@ﬀ.org",
    "אב@x",
    # refused
    "a@b@c",
    "not a jid",
    "a@",
    "@b",
    "a@b/c",
    "ju liet@x",
    "a'b@x",
    "a@b c",
    "a@b:5222",
    "a@-bad.org",
    "a@b-.org",
    "a@b..c",
    "a@[zz]",
    "a\u0000@b",
    "אaב@x",
    "x" * 1024 + "@a",
    "a@" + "b" * 64 + ".org",
]


def slixmpp_says(text: str) -> str | None:
    try:
        jid = JID(text)
    except InvalidJID:
        return None
    return str(jid.bare) if jid.user and not jid.resource else None


@pytest.mark.parametrize("text", CORPUS, ids=lambda text: repr(text[:24]))
def test_as_slixmpp_does(text: str) -> None:
    try:
        ours: str | None = bare_jid(text)
    except ValueError:
        ours = None
    assert ours == slixmpp_says(text)


def test_a_trailing_dot_is_stripped_as_rfc_7622_says() -> None:
    assert bare_jid("juliet@Capulet.lit.") == "juliet@capulet.lit"


def test_the_reason_names_the_input() -> None:
    with pytest.raises(ValueError, match=r"'a@b@c' is not a valid JID"):
        bare_jid("a@b@c")
    with pytest.raises(ValueError, match="expected a bare JID"):
        bare_jid("a@b/resource")


def test_no_slixmpp_is_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pubsub_cache.ops.jid as j; j.bare_jid('a@b'); print('slixmpp' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
