"""EnrichedIdentitySource: wraps one provider's identity source and adds the permissions a
remote API grants a subject to its provider roles, cached per subject, one call at a time."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from extauthz_server.cache.lru import MemoryCache
from extauthz_server.cache.single_flight import SingleFlight
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.errors import PermissionsTimedOut, PermissionsUnavailable
from extauthz_server.identity.client_credentials import (
    AccessTokenSource,
    ClientCredentialsTokenSource,
    StaticToken,
    TokenEndpoints,
)
from extauthz_server.identity.introspection import ClientCredentials
from extauthz_server.identity.router import TokenSource
from extauthz_server.metadata.circuit_breaker import CircuitBreaker
from extauthz_server.metadata.permissions import (
    BearerAuth,
    ClientCredentialsAuth,
    FailurePolicy,
    PermissionsSettings,
)
from extauthz_server.metadata.permissions_client import PermissionsClient

log = logging.getLogger(__name__)

# Enriched identities kept for reuse, so that the authorizer's allow memo (keyed by the
# identity object) keeps working: one object per (provider identity, permissions entry).
ENRICHED_MEMO_SIZE = 10_000


class PermissionsFetcher(Protocol):
    async def fetch(self, identity: Identity, timeout_s: float) -> frozenset[str]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True, eq=False)
class _Permissions:
    """One answer of the API; compared by object, so a refetch is a new entry."""

    names: frozenset[str]


PermissionsCache = MemoryCache[tuple[str | None, ...], _Permissions]


def new_permissions_cache(
    max_entries: int, clock: Callable[[], float] = time.monotonic
) -> PermissionsCache:
    return MemoryCache(max_entries, clock)


@dataclass(slots=True)
class EnrichmentStats:
    calls: int = 0  # permissions API calls made
    failures: int = 0  # of those, the ones that failed
    cache_hits: int = 0
    coalesced: int = 0  # checks that waited for another check's call
    passed_unenriched: int = 0  # checks that went on without permissions (on_failure: ignore)
    short_circuited: int = 0  # calls not made because the circuit breaker was open


class EnrichedIdentitySource:
    def __init__(
        self,
        inner: TokenSource,
        client: PermissionsFetcher,
        settings: PermissionsSettings,
        provider_name: str,
        clock: Callable[[], float] = time.monotonic,
        *,
        cache: PermissionsCache | None = None,
    ) -> None:
        """`cache` may be shared by the sources of several providers: its keys start with
        `provider_name`. Without one, a cache of `settings.max_entries` is made."""
        self._inner = inner
        self._client = client
        self._settings = settings
        self._provider_name = provider_name
        self._fields = tuple(f for f in settings.request_fields if f != "sub")
        self._cache = (
            cache if cache is not None else new_permissions_cache(settings.max_entries, clock)
        )
        self._in_flight: SingleFlight[tuple[str | None, ...], _Permissions] = SingleFlight()
        # id(provider identity) → (it, the permissions entry, the enriched identity).
        self._enriched: dict[tuple[int, int], tuple[Identity, _Permissions, Identity]] = {}
        self._failing = False
        self._breaker = CircuitBreaker(settings.circuit_breaker, clock)
        self.stats = EnrichmentStats()

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        started = time.monotonic()
        identity = await self._inner.resolve(token, timeout_s)
        if isinstance(identity, Inactive):
            return identity
        deadline = started + timeout_s
        try:
            permissions = await self._permissions(identity, deadline)
        except PermissionsUnavailable:
            if self._settings.on_failure is FailurePolicy.DENY:
                raise
            self.stats.passed_unenriched += 1
            return identity
        return self._enrich(identity, permissions)

    async def close(self) -> None:
        await self._client.close()

    def _key(self, identity: Identity) -> tuple[str | None, ...]:
        # The provider name keeps two providers' subjects apart; the other fields are
        # those the request carries (e.g. {client_id}), since the answer may depend on them.
        values = {"username": identity.username, "client_id": identity.client_id}
        return (self._provider_name, identity.subject, *(values[f] for f in self._fields))

    async def _permissions(self, identity: Identity, deadline: float) -> _Permissions:
        key = self._key(identity)
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        permissions, joined = await self._in_flight.run(
            key,
            lambda: self._fetch(identity, deadline),
            deadline,
            lambda: PermissionsUnavailable("timed out waiting for the permissions API"),
        )
        if joined:
            self.stats.coalesced += 1
        else:
            self._cache.put(key, permissions, self._settings.ttl_s)
        return permissions

    async def _fetch(self, identity: Identity, deadline: float) -> _Permissions:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # The check's budget went on the identity: not a failure of the API.
            raise PermissionsUnavailable("no time left to call the permissions API")
        if not self._breaker.allow():
            self.stats.short_circuited += 1
            raise PermissionsUnavailable("permissions API circuit open after repeated failures")
        self.stats.calls += 1
        try:
            names = await self._client.fetch(identity, remaining)
        except PermissionsUnavailable as exc:
            self.stats.failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "permissions API unavailable (%s); on_failure: %s applies until it answers",
                    exc,
                    self._settings.on_failure.value,
                )
            if isinstance(exc, PermissionsTimedOut) and remaining < self._settings.timeout_s:
                # Cut short by what was left of the check's budget: no verdict on the API.
                self._breaker.abandoned()
            elif self._breaker.failed():
                log.warning(
                    "permissions API circuit open: for %.1fs, checks that need it fail at once",
                    self._settings.circuit_breaker.open_s,
                )
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        self._breaker.succeeded()
        if self._failing:
            self._failing = False
            log.warning("permissions API answers again")
        return _Permissions(names)

    def _enrich(self, identity: Identity, permissions: _Permissions) -> Identity:
        """The identity with the permission names among its provider roles: the same object
        for the same identity and entry, so later phases can recognise it."""
        if permissions.names <= identity.provider_roles:
            return identity
        memo_key = (id(identity), id(permissions))
        memo = self._enriched.get(memo_key)
        if memo is not None and memo[0] is identity and memo[1] is permissions:
            return memo[2]
        enriched = dataclasses.replace(
            identity, provider_roles=identity.provider_roles | permissions.names
        )
        if len(self._enriched) >= ENRICHED_MEMO_SIZE:
            self._enriched.clear()
        self._enriched[memo_key] = (identity, permissions, enriched)
        return enriched


def build_enriched_source(
    inner: TokenSource,
    settings: PermissionsSettings,
    session: aiohttp.ClientSession,
    *,
    provider_name: str,
    credentials: ClientCredentials | None,
    endpoints: TokenEndpoints,
    clock: Callable[[], float] = time.monotonic,
) -> EnrichedIdentitySource:
    """Wire the permissions API around `inner` as `settings` say. `credentials` and
    `endpoints` are the provider's, needed for `auth: client_credentials` only."""
    auth = settings.auth
    tokens: AccessTokenSource | None = None
    if isinstance(auth, BearerAuth):
        tokens = StaticToken(auth.token)
    elif isinstance(auth, ClientCredentialsAuth):
        if credentials is None:
            raise ValueError("client_credentials auth needs the provider's client credentials")
        tokens = ClientCredentialsTokenSource(
            session,
            credentials,
            endpoints,
            token_endpoint=auth.token_endpoint,
            scope=auth.scope,
            clock=clock,
        )
    client = PermissionsClient(session, settings, tokens)
    return EnrichedIdentitySource(inner, client, settings, provider_name, clock)
