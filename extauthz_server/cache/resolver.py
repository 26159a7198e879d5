"""IdentityResolver: token digest → L1 → L2 → the provider's strategy (one call per token at a
time, a bounded number at once) → Identity, cached in both levels. A strategy that can answer
with no I/O (a JWT whose key is loaded) is asked directly after L1, and its answer is kept in
L1 only: verifying the token again costs less than a Redis round trip."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from extauthz_server.cache.entries import CacheEntry
from extauthz_server.cache.local_cache import Invalidation, LocalIdentityCache
from extauthz_server.cache.single_flight import SingleFlight
from extauthz_server.core.identity import DECIDED_LOCALLY, EXPIRY_SKEW_SECONDS, Identity, Inactive
from extauthz_server.core.tokens import log_id, token_digest
from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.strategies import AtHandStrategy, IdentityStrategy, ScreeningStrategy

log = logging.getLogger(__name__)

MIN_INTROSPECTION_BUDGET_S = 0.005


class SharedCache(Protocol):
    """The L2 seam (RedisCache); it must never raise."""

    async def get(self, digest: bytes) -> CacheEntry | None: ...

    def put_later(self, digest: bytes, entry: CacheEntry) -> None: ...

    async def invalidate(self, invalidation: Invalidation) -> Invalidation: ...


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_s: float
    negative_ttl_s: float
    stale_if_error_s: float = 0.0
    # Keep the identity's claims (for route conditions that read them); else drop them
    # before anything is cached, so no cache level holds the provider's answer.
    keep_claims: bool = False


@dataclass(slots=True)
class ResolverStats:
    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    lookups: int = 0
    screened_out: int = 0
    stale_served: int = 0
    saturated: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # the most strategy calls ever open at once


# Which level answered the current Check (read by the audit line): "l1", "l2", "provider",
# "stale", or "" when no identity was looked up.
lookup_level: ContextVar[str] = ContextVar("lookup_level", default="")


def without_claims(identity: Identity) -> Identity:
    return identity if identity.claims is None else dataclasses.replace(identity, claims=None)


class IdentityResolver:
    """Only answers the provider actually gave are cached: an identity until min(ttl, token
    exp), an `active: false` for the negative ttl; provider errors and answers the strategy
    reached locally (DECIDED_LOCALLY) never."""

    def __init__(
        self,
        strategy: IdentityStrategy,
        local: LocalIdentityCache,
        cache_policy: CachePolicy,
        *,
        shared: SharedCache | None = None,
        max_concurrency: int = 64,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._strategy = strategy
        self._screen = strategy.screen if isinstance(strategy, ScreeningStrategy) else None
        # An answer the strategy has at hand (a JWT whose key is loaded) is taken at once:
        # coalescing and the concurrency limit are for calls that wait on a provider, and cost
        # about a tenth of what verifying a JWT does; L2 is neither read nor written for it,
        # since any replica verifies the token faster than it could fetch the answer.
        self._at_hand = strategy.identify_at_hand if isinstance(strategy, AtHandStrategy) else None
        self._local = local
        self._shared = shared
        self._cache_policy = cache_policy
        self._wall_clock = wall_clock
        self._slots = asyncio.BoundedSemaphore(max_concurrency)
        self._in_flight: SingleFlight[bytes, Identity | Inactive] = SingleFlight()
        self.stats = ResolverStats()

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        digest = token_digest(token)
        entry = self._local.get(digest)
        if entry is not None and entry.is_fresh(self._wall_clock()):
            self.stats.l1_hits += 1
            lookup_level.set("l1")
            return entry.result
        if self._screen is not None and (rejected := self._screen(token)) is not None:
            self.stats.screened_out += 1
            return rejected
        if self._at_hand is not None and (answer := self._at_hand(token)) is not None:
            self.stats.misses += 1
            self.stats.lookups += 1
            lookup_level.set("provider")
            return self._settle(digest, answer, share=False)
        result, joined = await self._in_flight.run(
            digest,
            lambda: self._resolve_uncached(token, digest, entry, timeout_s),
            time.monotonic() + timeout_s,
            lambda: ProviderUnavailable("timed out waiting for introspection"),
        )
        if joined:
            lookup_level.set("coalesced")
        return result

    def still_held(self, token: str, identity: Identity) -> Callable[[], bool] | None:
        """For a token just answered with `identity` from a fresh L1 entry: a check, with no
        I/O, that L1 still holds that very entry and it is still fresh. A logout, a refresh
        or an eviction replaces or drops the entry, and the check fails from then on. When
        it passes it counts as the L1 hit it stands for. None when L1 holds no such entry."""
        digest = token_digest(token)
        local, clock, stats = self._local, self._wall_clock, self.stats
        entry = local.get(digest)
        if entry is None or entry.result is not identity or not entry.is_fresh(clock()):
            return None

        holds, fresh_until = local.holds, entry.fresh_until

        def held() -> bool:
            if clock() >= fresh_until or not holds(digest, entry):
                return False
            stats.l1_hits += 1
            lookup_level.set("l1")
            return True

        return held

    async def invalidate(self, invalidation: Invalidation) -> int:
        """A logout: drop the session from L2 (telling every process) and from this L1."""
        if self._shared is not None:
            invalidation = await self._shared.invalidate(invalidation)
        return self._local.invalidate(invalidation)

    async def _resolve_uncached(
        self, token: str, digest: bytes, stale: CacheEntry | None, timeout_s: float
    ) -> Identity | Inactive:
        deadline = time.monotonic() + timeout_s
        if self._shared is not None:
            shared = await self._shared.get(digest)
            if (
                shared is not None
                and shared.is_fresh(self._wall_clock())
                and not self._local.is_revoked(shared.session_id)
            ):
                self.stats.l2_hits += 1
                lookup_level.set("l2")
                self._local.put(digest, shared)
                return shared.result
            stale = stale or shared
        self.stats.misses += 1
        lookup_level.set("provider")
        try:
            result = await self._identify(token, deadline)
        except ProviderUnavailable:
            if stale is not None and self._may_serve_stale(stale):
                self.stats.stale_served += 1
                lookup_level.set("stale")
                log.warning(
                    "provider unavailable; serving token %s from stale cache", log_id(digest)
                )
                return stale.result
            raise
        return self._settle(digest, result)

    def _settle(
        self, digest: bytes, result: Identity | Inactive, *, share: bool = True
    ) -> Identity | Inactive:
        """The strategy's answer as it is cached (in L2 too when `share`) and served."""
        if isinstance(result, Identity):
            if not self._cache_policy.keep_claims:
                result = without_claims(result)
            if self._local.is_revoked(result.session_id):
                # A logout ended the session: a JWT validated locally (or an answer that
                # was under way) would otherwise still pass until the token expires.
                result = Inactive.SESSION_ENDED
        self._store(digest, result, share=share)
        return result

    def _may_serve_stale(self, entry: CacheEntry) -> bool:
        return entry.is_usable_stale(self._wall_clock()) and not self._local.is_revoked(
            entry.session_id
        )

    async def _identify(self, token: str, deadline: float) -> Identity | Inactive:
        """One strategy call, waiting for a free slot no longer than the deadline allows."""
        if self._slots.locked():
            # Only a full house needs the deadline (a timer per call costs as much as a
            # JWT's claims check).
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._slots.acquire()
            except TimeoutError as exc:
                self.stats.saturated += 1
                raise ProviderUnavailable("introspection concurrency limit reached") from exc
        else:
            await self._slots.acquire()
        try:
            remaining = deadline - time.monotonic()
            if remaining < MIN_INTROSPECTION_BUDGET_S:
                # The slot came free too late for a call to have any chance of answering.
                self.stats.saturated += 1
                raise ProviderUnavailable("introspection concurrency limit reached")
            self.stats.lookups += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                return await self._strategy.identify(token, remaining)
            finally:
                self.stats.in_flight -= 1
        finally:
            self._slots.release()

    def _store(self, digest: bytes, result: Identity | Inactive, *, share: bool = True) -> None:
        if result in DECIDED_LOCALLY:
            return
        now = self._wall_clock()
        policy = self._cache_policy
        if isinstance(result, Identity):
            fresh_until = now + policy.ttl_s
            stale_until = fresh_until + policy.stale_if_error_s
            if result.expires_at is not None:
                usable_until = result.expires_at - EXPIRY_SKEW_SECONDS
                fresh_until = min(fresh_until, usable_until)
                stale_until = min(stale_until, usable_until)
        else:
            log.info("token %s is not usable: %s", log_id(digest), result.value)
            fresh_until = stale_until = now + policy.negative_ttl_s
        if fresh_until <= now:
            return
        entry = CacheEntry(result, fresh_until, stale_until)
        self._local.put(digest, entry)
        if share and self._shared is not None:
            self._shared.put_later(digest, entry)
