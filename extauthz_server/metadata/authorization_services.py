"""Keycloak Authorization Services as a PermissionSource: UMA-grant answers for a token,
cached per (token, `resource#scope`) in decision mode or per token in permissions mode, in
process and (when configured) in Redis, asked once however many Checks wait for them, behind a
circuit breaker, and served stale for a while when Keycloak cannot answer.

The HTTP side, and the Keycloak facts it follows, are in `uma_grant`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from extauthz_server.cache.lru import MemoryCache
from extauthz_server.cache.redis_cache import RedisCache
from extauthz_server.cache.single_flight import SingleFlight
from extauthz_server.core.identity import Identity
from extauthz_server.core.permissions import (
    GrantedPermissions,
    PermissionAnswer,
    PermissionQuery,
    PermissionSource,
)
from extauthz_server.core.strict_json import oauth_error_code
from extauthz_server.core.tokens import token_digest
from extauthz_server.errors import ProviderError, ProviderUnavailable
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientCredentials
from extauthz_server.metadata.circuit_breaker import BreakerSettings, CircuitBreaker
from extauthz_server.metadata.uma_grant import (
    UmaGrant,
    Verdict,
    decision_of,
    decode_verdict,
    encode_verdict,
    permissions_of,
)

log = logging.getLogger(__name__)

# In the cache keys, permissions mode's one verdict per token (a pair always holds a '#').
_ALL_PERMISSIONS = "permissions"

DecisionKey = tuple[bytes, str]


class PermissionMode(enum.Enum):
    # One call per token, resource and scope.
    DECISION = "decision"
    # One call per token listing everything granted; each pair is looked up locally.
    PERMISSIONS = "permissions"


@dataclass(frozen=True, slots=True)
class AuthorizationServicesSettings:
    """`provider.authorization_services`."""

    # The resource server's client id (never taken from the request).
    audience: str
    mode: PermissionMode = PermissionMode.DECISION
    timeout_s: float = 0.15
    circuit_breaker: BreakerSettings = field(
        default_factory=lambda: BreakerSettings(failure_threshold=5, open_s=5.0)
    )


@dataclass(frozen=True, slots=True)
class DecisionCachePolicy:
    ttl_s: float
    denied_ttl_s: float
    max_entries: int
    # How long past its freshness a verdict may stand in while Keycloak cannot answer.
    stale_if_error_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Kept:
    verdict: Verdict
    # Monotonic time after which Keycloak is asked again (and this serves only if it fails).
    fresh_until: float


def _answer(verdict: Verdict, query: PermissionQuery) -> PermissionAnswer:
    if isinstance(verdict, GrantedPermissions):
        return verdict.answer_for(query)
    return verdict


class UmaDecisions:
    """A PermissionSource for one provider: Keycloak asked once per verdict and the verdict
    kept (grants up to the identity's expiry, denials shorter)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: EndpointSource,
        credentials: ClientCredentials,
        settings: AuthorizationServicesSettings,
        cache: DecisionCachePolicy,
        wall_clock: Callable[[], float] = time.time,
        *,
        shared: RedisCache | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grant = UmaGrant(session, credentials, settings.audience)
        self._endpoints = endpoints
        self._settings = settings
        self._policy = cache
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._shared = shared
        self._breaker = CircuitBreaker(settings.circuit_breaker, monotonic)
        self._kept: MemoryCache[DecisionKey, _Kept] = MemoryCache(cache.max_entries, monotonic)
        self._flight: SingleFlight[DecisionKey, Verdict] = SingleFlight()
        self.calls = 0
        self.cache_hits = 0
        self.shared_hits = 0
        self.stale_served = 0
        # Keycloak's answers by outcome (PermissionAnswer values, and "failed").
        self.outcomes: Counter[str] = Counter()

    async def decide(
        self,
        token: str,
        identity: Identity,
        query: PermissionQuery,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        if self._settings.mode is PermissionMode.PERMISSIONS:
            subject = _ALL_PERMISSIONS
        else:
            subject = f"uri:{query.pair}" if query.by_uri else f"name:{query.pair}"
        key = (token_digest(token), subject)
        verdict = await self._verdict(key, identity, token, query, timeout_s)
        return _answer(verdict, query)

    async def _verdict(
        self,
        key: DecisionKey,
        identity: Identity,
        token: str,
        query: PermissionQuery,
        timeout_s: float,
    ) -> Verdict:
        kept = self._kept.get(key)
        if kept is not None and kept.fresh_until > self._monotonic():
            self.cache_hits += 1
            return kept.verdict
        shared = await self._shared_verdict(key)
        if shared is not None:
            self.shared_hits += 1
            self._keep(key, shared, identity)
            return shared
        budget = max(0.0, min(self._settings.timeout_s, timeout_s))
        try:
            verdict, joined = await self._flight.run(
                key,
                lambda: self._ask(budget, token, query),
                time.monotonic() + budget,
                lambda: ProviderUnavailable("timed out waiting for a UMA answer"),
            )
        except ProviderUnavailable:
            if kept is None:
                raise
            self.stale_served += 1
            return kept.verdict
        ttl = self._keep(key, verdict, identity)
        if self._shared is not None and not joined:
            self._shared.put_decision_later(
                key[0], self._shared_subject(key), encode_verdict(verdict), ttl
            )
        return verdict

    def _keep(self, key: DecisionKey, verdict: Verdict, identity: Identity) -> float:
        """Keeps the verdict in L1; returns how long it is fresh."""
        granted = isinstance(verdict, GrantedPermissions) and bool(verdict.scopes_by_resource)
        fresh = (
            self._policy.ttl_s
            if granted or verdict is PermissionAnswer.GRANTED
            else self._policy.denied_ttl_s
        )
        kept_for = fresh + self._policy.stale_if_error_s
        if identity.expires_at is not None:
            # Never past the token's expiry, not even stale.
            left = identity.expires_at - self._wall_clock()
            fresh, kept_for = min(fresh, left), min(kept_for, left)
        self._kept.put(key, _Kept(verdict, self._monotonic() + fresh), kept_for)
        return fresh

    def _shared_subject(self, key: DecisionKey) -> str:
        return f"{self._settings.audience} {key[1]}"

    async def _shared_verdict(self, key: DecisionKey) -> Verdict | None:
        if self._shared is None:
            return None
        text = await self._shared.get_decision(key[0], self._shared_subject(key))
        return decode_verdict(text) if text is not None else None

    async def _decision(self, endpoint: str, token: str, query: PermissionQuery) -> Verdict:
        status, body = await self._grant.decision(endpoint, token, query)
        answer = decision_of(status, body)
        if answer is PermissionAnswer.MISCONFIGURED:
            log.error(
                "Keycloak does not know %s%s for audience %s (error %r): check the route's "
                "permission and provider.authorization_services.audience",
                "the URI " if query.by_uri else "",
                query.pair,
                self._settings.audience,
                oauth_error_code(body),
            )
        return answer

    async def _permissions(self, endpoint: str, token: str) -> Verdict:
        status, body = await self._grant.permissions(endpoint, token)
        verdict = permissions_of(status, body)
        if verdict is PermissionAnswer.MISCONFIGURED:
            log.error(
                "Keycloak refused to list permissions for audience %s (error %r): check "
                "provider.authorization_services.audience",
                self._settings.audience,
                oauth_error_code(body),
            )
        return verdict

    async def _ask(self, budget: float, token: str, query: PermissionQuery) -> Verdict:
        """One call to Keycloak, in the configured mode, behind the circuit breaker."""
        if not self._breaker.allow():
            self.outcomes["short_circuited"] += 1
            raise ProviderUnavailable("UMA grant: circuit open after repeated failures")
        self.calls += 1
        try:
            async with asyncio.timeout(budget):
                endpoint = await self._endpoints.token_endpoint(budget)
                if self._settings.mode is PermissionMode.PERMISSIONS:
                    verdict = await self._permissions(endpoint, token)
                else:
                    verdict = await self._decision(endpoint, token, query)
        except TimeoutError as exc:
            self.outcomes["failed"] += 1
            if budget < self._settings.timeout_s:
                # Cut short by what was left of the check's budget: no verdict on Keycloak.
                self._breaker.abandoned()
            else:
                self._failed()
            raise ProviderUnavailable(f"UMA grant timed out after {budget:.3f}s") from exc
        except ProviderError:
            self.outcomes["failed"] += 1
            self._failed()
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        # Any answer, a denial included, shows that Keycloak decides.
        self._breaker.succeeded()
        self.outcomes[_outcome(verdict)] += 1
        return verdict

    def _failed(self) -> None:
        if self._breaker.failed():
            log.warning(
                "UMA grant: circuit open; for %.1fs, checks that need Keycloak's answer fail "
                "at once",
                self._settings.circuit_breaker.open_s,
            )


def _outcome(verdict: Verdict) -> str:
    if isinstance(verdict, GrantedPermissions):
        granted = bool(verdict.scopes_by_resource)
        verdict = PermissionAnswer.GRANTED if granted else PermissionAnswer.DENIED
    return str(verdict.value)


class PermissionRouter:
    """The PermissionSource of the authorizer: a route pinned to a provider asks that one's
    Authorization Services, any other route the first provider that has them."""

    def __init__(self, by_provider: Mapping[str, PermissionSource]) -> None:
        if not by_provider:
            raise ValueError("at least one provider with authorization_services is needed")
        self._by_provider = dict(by_provider)
        self._default = next(iter(self._by_provider.values()))

    async def decide(
        self,
        token: str,
        identity: Identity,
        query: PermissionQuery,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        source = self._by_provider.get(provider, self._default) if provider else self._default
        return await source.decide(token, identity, query, timeout_s, provider)
