"""MemoryCache: bounded LRU (entries and bytes) with per-entry expiry, on an injected clock."""

from __future__ import annotations

import pytest

from extauthz_server.cache.lru import MemoryCache


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_stored_value_is_returned(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", 10)
    assert cache.get(b"k") == "v"


def test_missing_key_is_none(clock: FakeClock) -> None:
    assert MemoryCache[bytes, str](4, clock).get(b"absent") is None


@pytest.mark.parametrize(
    ("elapsed", "present"),
    [(0.0, True), (9.999, True), (10.0, False), (11.0, False)],
    ids=["immediately", "just-before-expiry", "at-expiry", "after-expiry"],
)
def test_entry_expires_after_its_ttl(clock: FakeClock, elapsed: float, present: bool) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", 10)
    clock.advance(elapsed)
    assert (cache.get(b"k") == "v") is present


def test_expired_entry_is_dropped_on_read(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", 1)
    clock.advance(1)
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_each_entry_has_its_own_expiry(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"short", "s", 1)
    cache.put(b"long", "l", 100)
    clock.advance(50)
    assert cache.get(b"short") is None
    assert cache.get(b"long") == "l"


def test_put_again_replaces_value_and_expiry(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "old", 1)
    cache.put(b"k", "new", 100)
    clock.advance(50)
    assert cache.get(b"k") == "new"
    assert len(cache) == 1


def test_reading_does_not_extend_expiry(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", 10)
    clock.advance(9)
    assert cache.get(b"k") == "v"
    clock.advance(1)
    assert cache.get(b"k") is None


@pytest.mark.parametrize("ttl", [0, -1, -0.5], ids=["zero", "negative", "negative-fraction"])
def test_non_positive_ttl_is_not_stored(clock: FakeClock, ttl: float) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", ttl)
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_non_positive_ttl_drops_an_existing_entry(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](4, clock)
    cache.put(b"k", "v", 10)
    cache.put(b"k", "newer", 0)
    assert cache.get(b"k") is None


def test_least_recently_put_is_evicted_past_max_entries(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](3, clock)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, key.decode(), 60)
    assert len(cache) == 3
    assert cache.get(b"a") is None
    assert [cache.get(k) for k in (b"b", b"c", b"d")] == ["b", "c", "d"]


def test_reading_makes_an_entry_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](3, clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key.decode(), 60)
    assert cache.get(b"a") == "a"
    cache.put(b"d", "d", 60)
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "a"


def test_putting_again_makes_an_entry_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](2, clock)
    cache.put(b"a", "a", 60)
    cache.put(b"b", "b", 60)
    cache.put(b"a", "a2", 60)
    cache.put(b"c", "c", 60)
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "a2"


def test_cache_of_one_keeps_the_latest(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](1, clock)
    cache.put(b"a", "a", 60)
    cache.put(b"b", "b", 60)
    assert (cache.get(b"a"), cache.get(b"b")) == (None, "b")


@pytest.mark.parametrize("max_entries", [0, -1], ids=["zero", "negative"])
def test_max_entries_must_be_positive(max_entries: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryCache[bytes, str](max_entries)


def test_byte_bound_evicts_least_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache[bytes, str](100, clock, max_bytes=250)
    cache.put(b"a", "a", 10, size=100)
    cache.put(b"b", "b", 10, size=100)
    cache.get(b"a")
    cache.put(b"c", "c", 10, size=100)
    assert cache.get(b"b") is None
    assert (cache.get(b"a"), cache.get(b"c")) == ("a", "c")
    assert cache.size_bytes == 200


def test_every_departure_is_reported_to_on_evict(clock: FakeClock) -> None:
    gone: list[tuple[bytes, str]] = []
    cache = MemoryCache[bytes, str](2, clock, on_evict=lambda k, v: gone.append((k, v)))
    cache.put(b"a", "1", 10)
    cache.put(b"a", "2", 10)  # replaced
    cache.put(b"b", "3", 1)
    cache.put(b"c", "4", 10)  # evicts a
    clock.advance(2)
    cache.get(b"b")  # expired
    cache.pop(b"c")
    assert gone == [(b"a", "1"), (b"a", "2"), (b"b", "3"), (b"c", "4")]
    assert cache.size_bytes == 0
