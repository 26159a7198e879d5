"""Sealed Redis entries: whoever can write to Redis without the key cannot forge an
identity, nor move a real one to another token's or provider's key."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extauthz_server.cache.entries import EntryFormatError, EntrySeal, seal_key
from extauthz_server.core.secret import Secret

KEY = seal_key(Secret("k" * 32))
DIGEST = bytes(range(32))
OTHER_DIGEST = bytes(range(1, 33))
PAYLOAD = b'{"v":1,"identity":{"sub":"bob","roles":["manager"]}}'


def test_a_sealed_entry_opens_to_its_payload() -> None:
    seal = EntrySeal(KEY, "extauthz")

    sealed = seal.seal(DIGEST, PAYLOAD)

    assert sealed != PAYLOAD
    assert seal.open(DIGEST, sealed) == PAYLOAD


def _other_key_seal(sealed: bytes) -> bytes:
    return EntrySeal(seal_key(Secret("x" * 32)), "extauthz").seal(DIGEST, PAYLOAD)


@pytest.mark.parametrize(
    "change",
    [
        lambda sealed: sealed[:-1] + b"]",
        lambda sealed: sealed[:10] + bytes([sealed[10] ^ 1]) + sealed[11:],
        lambda sealed: PAYLOAD,
        lambda sealed: sealed[:20],
        lambda sealed: b"",
        _other_key_seal,
    ],
    ids=["payload-edited", "tag-edited", "unsealed", "truncated", "empty", "other-key"],
)
def test_an_entry_not_sealed_with_this_key_is_refused(change: Callable[[bytes], bytes]) -> None:
    seal = EntrySeal(KEY, "extauthz")

    with pytest.raises(EntryFormatError):
        seal.open(DIGEST, change(seal.seal(DIGEST, PAYLOAD)))


def test_an_entry_cannot_be_moved_to_another_tokens_key() -> None:
    seal = EntrySeal(KEY, "extauthz")

    with pytest.raises(EntryFormatError, match="does not verify"):
        seal.open(OTHER_DIGEST, seal.seal(DIGEST, PAYLOAD))


def test_an_entry_cannot_be_moved_to_another_providers_namespace() -> None:
    sealed = EntrySeal(KEY, "extauthz:partners").seal(DIGEST, PAYLOAD)

    with pytest.raises(EntryFormatError, match="does not verify"):
        EntrySeal(KEY, "extauthz:demo").open(DIGEST, sealed)


def test_without_a_key_entries_are_stored_as_they_are() -> None:
    seal = EntrySeal(None, "extauthz")

    assert seal.seal(DIGEST, PAYLOAD) == PAYLOAD
    assert seal.open(DIGEST, PAYLOAD) == PAYLOAD


def test_the_key_is_derived_from_the_secret_and_is_not_the_secret() -> None:
    secret = "extauthzdemosecret0123456789abcd"

    assert seal_key(Secret(secret)) == seal_key(Secret(secret))
    assert seal_key(Secret(secret)) != seal_key(Secret(secret + "x"))
    assert secret.encode() not in seal_key(Secret(secret))
    assert len(seal_key(Secret(secret))) == 32
