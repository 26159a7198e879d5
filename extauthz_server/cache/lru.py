"""A bounded in-process LRU with per-entry expiry, bounded in entries and in (estimated) bytes."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float
    size: int


class MemoryCache(Generic[K, V]):
    """Least-recently-used eviction past `max_entries` or `max_bytes`; expired entries are
    never returned. `on_evict` hears of every entry that leaves, however it leaves."""

    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._on_evict = on_evict
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def holds(self, key: K, value: V) -> bool:
        """Whether `value` (that very object) is still the entry for `key`, which then counts
        as recently used. Its expiry is not read: the caller knows a stricter one."""
        entry = self._entries.get(key)
        if entry is None or entry.value is not value:
            return False
        self._entries.move_to_end(key)
        return True

    def put(self, key: K, value: V, ttl_s: float, size: int = 1) -> None:
        if key in self._entries:
            self._remove(key)
        if ttl_s <= 0:
            return
        self._entries[key] = _Entry(value, self._clock() + ttl_s, size)
        self._bytes += size
        while len(self._entries) > self._max_entries or (
            self._max_bytes is not None and self._bytes > self._max_bytes and len(self._entries) > 1
        ):
            self._remove(next(iter(self._entries)))

    def pop(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._remove(key)
        return entry.value

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        count = len(self._entries)
        for key in list(self._entries):
            self._remove(key)
        return count

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        if self._on_evict is not None:
            self._on_evict(key, entry.value)
