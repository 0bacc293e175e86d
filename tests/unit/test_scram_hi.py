"""The SCRAM Hi() our clients log in with (xmpp/client.py replaces slixmpp's Python loop with
hashlib's PBKDF2) gives RFC 6070's PBKDF2-HMAC-SHA1 test vectors."""

from __future__ import annotations

import hashlib
from typing import cast

import pytest
from slixmpp.util.sasl.mechanisms import SCRAM

from pubsub_cache.xmpp.client import _scram_in_c


@pytest.mark.parametrize(
    ("password", "salt", "iterations", "expected"),
    [
        (b"password", b"salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"),
        (b"password", b"salt", 4096, "4b007901b765489abead49d926f721d065a429c1"),
    ],
)
def test_hi_is_pbkdf2_hmac_sha1(
    password: bytes, salt: bytes, iterations: int, expected: str
) -> None:
    _scram_in_c()
    mechanism = SCRAM.__new__(SCRAM)
    mechanism.hash = hashlib.sha1

    # slixmpp annotates the password as str but hands Hi() the credential's bytes.
    assert SCRAM.Hi(mechanism, cast(str, password), salt, iterations).hex() == expected
