"""IdentityResolver: token digest → cache → introspection (one per token at a time) → Identity."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from extauthz_server.cache import IdentityCache
from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity import Identity, Inactive, identity_from_introspection
from extauthz_server.roles import ClaimPath
from extauthz_server.tokens import log_id, token_digest

log = logging.getLogger(__name__)


class Introspector(Protocol):
    async def introspect(
        self, token: str, timeout_s: float | None = None
    ) -> Mapping[str, object]: ...


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_s: float
    negative_ttl_s: float


class IdentityResolver:
    """Resolves tokens to identities. Only answers the provider actually gave are cached:
    an identity until min(ttl, token exp), an `active: false` briefly; errors never."""

    def __init__(
        self,
        introspector: Introspector,
        cache: IdentityCache[Identity | Inactive],
        cache_policy: CachePolicy,
        role_claims: tuple[ClaimPath, ...],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._introspector = introspector
        self._cache = cache
        self._cache_policy = cache_policy
        self._role_claims = role_claims
        self._wall_clock = wall_clock
        self._in_flight: dict[bytes, asyncio.Future[Identity | Inactive]] = {}

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        pending = self._in_flight.get(digest)
        if pending is not None:
            joined = await self._join(pending, timeout_s)
            if joined is not None:
                return joined
        future: asyncio.Future[Identity | Inactive] = asyncio.get_running_loop().create_future()
        self._in_flight[digest] = future
        try:
            result = await self._introspect(token, digest, timeout_s)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; mark the exception as retrieved.
            future.exception()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._in_flight[digest]

    async def _join(
        self, pending: asyncio.Future[Identity | Inactive], timeout_s: float
    ) -> Identity | Inactive | None:
        """Wait for another check's introspection of the same token; None if it was cancelled."""
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(pending)
        except TimeoutError as exc:
            raise ProviderUnavailable("timed out waiting for introspection") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and task is not None and not task.cancelling():
                return None
            raise

    async def _introspect(self, token: str, digest: bytes, timeout_s: float) -> Identity | Inactive:
        document = await self._introspector.introspect(token, timeout_s)
        now = self._wall_clock()
        result = identity_from_introspection(document, self._role_claims, now)
        if isinstance(result, Identity):
            ttl = self._cache_policy.ttl_s
            if result.expires_at is not None:
                ttl = min(ttl, result.expires_at - now)
            self._cache.put(digest, result, ttl)
        else:
            log.info("token %s is not usable: %s", log_id(digest), result.value)
            self._cache.put(digest, result, self._cache_policy.negative_ttl_s)
        return result
