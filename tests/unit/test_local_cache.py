"""L1 identity cache: entries found by session and subject for logout, revoked sessions kept out."""

from __future__ import annotations

import pytest

from extauthz_server.cache.entries import CacheEntry, EntryFormatError, decode_entry, encode_entry
from extauthz_server.cache.local_cache import Invalidation, LocalIdentityCache
from extauthz_server.core.identity import Identity, Inactive

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def identity(subject: str, sid: str | None) -> Identity:
    return Identity(
        subject=subject,
        username=subject,
        email=f"{subject}@example.com",
        client_id="web-app",
        scopes=frozenset({"openid", "email"}),
        provider_roles=frozenset({"manager", "org manager"}),
        expires_at=NOW + 300,
        session_id=sid,
        audience=("ext-authz", "account"),
    )


def entry(result: Identity | Inactive, fresh_s: float = 60, stale_s: float = 0) -> CacheEntry:
    return CacheEntry(result, NOW + fresh_s, NOW + fresh_s + stale_s)


@pytest.fixture
def cache() -> LocalIdentityCache:
    return LocalIdentityCache(100, 1 << 20, revoked_horizon_s=600, wall_clock=Clock())


def test_logout_of_a_session_drops_every_token_of_that_session_only(
    cache: LocalIdentityCache,
) -> None:
    cache.put(b"t1", entry(identity("bob", "s1")))
    cache.put(b"t2", entry(identity("bob", "s1")))
    cache.put(b"t3", entry(identity("bob", "s2")))

    dropped = cache.invalidate(Invalidation(session_id="s1"))

    assert dropped == 2
    assert cache.get(b"t1") is None
    assert cache.get(b"t2") is None
    assert cache.get(b"t3") is not None


def test_logout_of_a_subject_drops_all_its_sessions(cache: LocalIdentityCache) -> None:
    cache.put(b"t1", entry(identity("bob", "s1")))
    cache.put(b"t2", entry(identity("bob", "s2")))
    cache.put(b"t3", entry(identity("carol", "s3")))

    assert cache.invalidate(Invalidation(subject="bob")) == 2
    assert cache.get(b"t3") is not None


def test_digests_named_by_another_level_are_dropped_too(cache: LocalIdentityCache) -> None:
    cache.put(b"t1", entry(identity("svc", None)))

    assert cache.invalidate(Invalidation(session_id="unknown", digests=(b"t1",))) == 1


def test_a_revoked_session_cannot_be_cached_again(cache: LocalIdentityCache) -> None:
    cache.invalidate(Invalidation(session_id="s1"))

    cache.put(b"late", entry(identity("bob", "s1")))

    assert cache.get(b"late") is None
    assert cache.is_revoked("s1")
    assert not cache.is_revoked("s2")


def test_evicted_entries_leave_the_session_index(cache: LocalIdentityCache) -> None:
    small = LocalIdentityCache(1, 1 << 20, revoked_horizon_s=600, wall_clock=Clock())
    small.put(b"t1", entry(identity("bob", "s1")))
    small.put(b"t2", entry(identity("carol", "s2")))  # evicts t1

    assert small.invalidate(Invalidation(session_id="s1")) == 0
    assert len(small) == 1


def test_catching_up_after_missed_logouts_drops_every_entry_and_remembers_them(
    cache: LocalIdentityCache,
) -> None:
    cache.put(b"t1", entry(identity("bob", "s1")))
    cache.put(b"t2", entry(identity("carol", "s2")))
    cache.invalidate(Invalidation(session_id="s3"))

    assert cache.catch_up(["s1", "s4"]) == 2

    assert len(cache) == 0
    assert cache.size_bytes == 0
    assert cache.invalidate(Invalidation(subject="bob")) == 0
    assert all(cache.is_revoked(sid) for sid in ("s1", "s3", "s4"))
    assert not cache.is_revoked("s2")
    cache.put(b"late", entry(identity("bob", "s1")))
    assert cache.get(b"late") is None


def test_entries_are_kept_until_their_stale_limit(cache: LocalIdentityCache) -> None:
    clock = Clock()
    local = LocalIdentityCache(10, 1 << 20, revoked_horizon_s=600, wall_clock=clock)
    local.put(b"t", entry(identity("bob", "s"), fresh_s=10, stale_s=20))
    clock.now = NOW + 15
    found = local.get(b"t")
    assert found is not None
    assert not found.is_fresh(clock.now)
    assert found.is_usable_stale(clock.now)
    clock.now = NOW + 31
    assert local.get(b"t") is None


@pytest.mark.parametrize(
    "result",
    [identity("bob", "s1"), identity("svc", None), Inactive.NOT_ACTIVE, Inactive.NOT_BEARER],
    ids=["user", "service-account", "inactive", "not-bearer"],
)
def test_entries_survive_the_redis_wire_form(result: Identity | Inactive) -> None:
    original = entry(result, fresh_s=60, stale_s=30)
    assert decode_entry(encode_entry(original)) == original


def test_wire_form_holds_no_token_and_no_raw_document() -> None:
    data = encode_entry(entry(identity("bob", "s1"))).decode()
    assert "realm_access" not in data
    assert "token" not in data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 2}',
        b'{"v":1,"fresh_until":1,"stale_until":1}',
        b'{"v":1,"fresh_until":1,"stale_until":1,"identity":{"sub":5}}',
        b'{"v":1,"fresh_until":1,"stale_until":1,"inactive":"bogus"}',
    ],
    ids=["empty", "text", "list", "other-version", "no-result", "bad-sub", "bad-reason"],
)
def test_unreadable_wire_forms_are_rejected(data: bytes) -> None:
    with pytest.raises(EntryFormatError):
        decode_entry(data)
