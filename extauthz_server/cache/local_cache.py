"""L1: this process's identity cache, indexed by session and subject so a logout can find
every entry it must drop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from extauthz_server.cache.entries import CacheEntry, entry_size
from extauthz_server.cache.lru import MemoryCache


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What a back-channel logout ends: a session, or every session of a subject, plus the
    digests another level already knew to belong to it."""

    session_id: str | None = None
    subject: str | None = None
    digests: tuple[bytes, ...] = ()


class LocalIdentityCache:
    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        revoked_horizon_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock
        self._by_session: dict[str, set[bytes]] = {}
        self._by_subject: dict[str, set[bytes]] = {}
        self._entries: MemoryCache[bytes, CacheEntry] = MemoryCache(
            max_entries, wall_clock, max_bytes=max_bytes, on_evict=self._unindex
        )
        # Sessions ended by a logout, remembered so an introspection that was already under
        # way when the logout arrived cannot put the session back into the cache.
        self._revoked_sessions: MemoryCache[str, bool] = MemoryCache(max_entries, wall_clock)
        self._revoked_horizon_s = revoked_horizon_s

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._entries.size_bytes

    def get(self, digest: bytes) -> CacheEntry | None:
        """The entry, fresh or only usable as stale; the caller tells which."""
        return self._entries.get(digest)

    def holds(self, digest: bytes, entry: CacheEntry) -> bool:
        """Whether `entry` is still the one kept for `digest` (not replaced, evicted or
        dropped by a logout); it then counts as recently used. Its freshness is the caller's
        to check."""
        return self._entries.holds(digest, entry)

    def put(self, digest: bytes, entry: CacheEntry) -> None:
        sid = entry.session_id
        if sid is not None and self._revoked_sessions.get(sid):
            return
        self._entries.put(
            digest, entry, entry.stale_until - self._wall_clock(), size=entry_size(entry)
        )
        if sid is not None:
            self._by_session.setdefault(sid, set()).add(digest)
        subject = entry.subject
        if subject is not None:
            self._by_subject.setdefault(subject, set()).add(digest)

    def is_revoked(self, session_id: str | None) -> bool:
        return session_id is not None and bool(self._revoked_sessions.get(session_id))

    def catch_up(self, revoked_sessions: Iterable[str]) -> int:
        """After missing logouts: remember `revoked_sessions` and drop every entry (they refill
        from L2, which the logouts cleaned); returns how many entries were dropped."""
        for session_id in revoked_sessions:
            self._revoked_sessions.put(session_id, True, self._revoked_horizon_s)
        return self._entries.clear()

    def invalidate(self, invalidation: Invalidation) -> int:
        """Drop every entry of the session or subject; returns how many were dropped."""
        digests = set(invalidation.digests)
        if invalidation.session_id is not None:
            digests |= self._by_session.get(invalidation.session_id, set())
            self._revoked_sessions.put(invalidation.session_id, True, self._revoked_horizon_s)
        if invalidation.subject is not None:
            digests |= self._by_subject.get(invalidation.subject, set())
        return sum(self._entries.pop(digest) is not None for digest in digests)

    def _unindex(self, digest: bytes, entry: CacheEntry) -> None:
        _discard(self._by_session, entry.session_id, digest)
        _discard(self._by_subject, entry.subject, digest)


def _discard(index: dict[str, set[bytes]], name: str | None, digest: bytes) -> None:
    if name is None:
        return
    digests = index.get(name)
    if digests is not None:
        digests.discard(digest)
        if not digests:
            del index[name]
