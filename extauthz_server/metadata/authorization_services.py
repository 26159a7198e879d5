"""Keycloak Authorization Services: one UMA-grant decision per token, resource and scope,
asked with our own client's credentials for the user's token (`subject_token`), cached.

Facts this follows (verified on Keycloak 26.7.3): in `response_mode=decision`, several
permissions (or a resource without a scope) answer true if *any* is granted, so exactly one
`resource#scope` goes in each call; without `subject_token`, Keycloak would judge our own
service account; a bad, expired or logged-out user token is a 400 (`invalid_grant` or
`unauthorized_client`), a 401 means our own credentials failed, a denial is 403
`access_denied`, and an unknown resource, scope or audience is a 400 of its own.
"""

from __future__ import annotations

import asyncio
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
from extauthz_server.core.permissions import PermissionAnswer, PermissionSource
from extauthz_server.core.strict_json import loads_strict, oauth_error_code
from extauthz_server.core.tokens import token_digest
from extauthz_server.errors import ProviderError, ProviderRejectedClient, ProviderUnavailable
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.identity.provider_http import failure_reason, shown_url, status_reason
from extauthz_server.metadata.circuit_breaker import BreakerSettings, CircuitBreaker

log = logging.getLogger(__name__)

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
MAX_ANSWER_BYTES = 16 * 1024
# Keycloak's 400s for a user token it will not evaluate: invalid_grant when the token itself
# authenticates the request, unauthorized_client ("Invalid identity") for subject_token.
_TOKEN_INVALID_ERRORS = frozenset({"invalid_grant", "unauthorized_client"})

DecisionKey = tuple[bytes, str, str]


@dataclass(frozen=True, slots=True)
class AuthorizationServicesSettings:
    """`provider.authorization_services`."""

    # The resource server's client id (never taken from the request).
    audience: str
    timeout_s: float = 0.15
    circuit_breaker: BreakerSettings = field(
        default_factory=lambda: BreakerSettings(failure_threshold=5, open_s=5.0)
    )


@dataclass(frozen=True, slots=True)
class DecisionCachePolicy:
    ttl_s: float
    denied_ttl_s: float
    max_entries: int


def answer_of(status: int, body: bytes) -> PermissionAnswer:
    """Keycloak's answer from a UMA decision response; ProviderError when it gave none."""
    if status == 200:
        try:
            document = loads_strict(body)
        except ValueError:
            document = None
        if isinstance(document, dict) and document.get("result") is True:
            return PermissionAnswer.GRANTED
        raise ProviderUnavailable("UMA decision answered 200 without result: true")
    error = oauth_error_code(body)
    if status == 403 and error == "access_denied":
        return PermissionAnswer.DENIED
    if status == 400 and error in _TOKEN_INVALID_ERRORS:
        return PermissionAnswer.TOKEN_INVALID
    if status == 400:
        return PermissionAnswer.MISCONFIGURED
    if status == 401:
        raise ProviderRejectedClient(f"UMA decision {status_reason(status)}")
    raise ProviderUnavailable(f"UMA decision {status_reason(status)}")


class UmaDecisions:
    """A PermissionSource for one provider: Keycloak asked once per (token, resource, scope)
    and the answer kept (grants up to the identity's expiry, denials shorter)."""

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
        self._session = session
        self._endpoints = endpoints
        self._credentials = credentials
        self._settings = settings
        self._policy = cache
        self._wall_clock = wall_clock
        self._shared = shared
        self._breaker = CircuitBreaker(settings.circuit_breaker, monotonic)
        self._answers: MemoryCache[DecisionKey, PermissionAnswer] = MemoryCache(cache.max_entries)
        self._flight: SingleFlight[DecisionKey, PermissionAnswer] = SingleFlight()
        self.calls = 0
        self.cache_hits = 0
        self.shared_hits = 0
        # Keycloak's answers by outcome (PermissionAnswer values, and "failed").
        self.outcomes: Counter[str] = Counter()

    async def decide(
        self,
        token: str,
        identity: Identity,
        resource: str,
        scope: str,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        key = (token_digest(token), resource, scope)
        cached = self._answers.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        shared = await self._shared_answer(key)
        if shared is not None:
            self.shared_hits += 1
            self._answers.put(key, shared, self._ttl(shared, identity))
            return shared
        budget = max(0.0, min(self._settings.timeout_s, timeout_s))
        answer, joined = await self._flight.run(
            key,
            lambda: self._ask(token, resource, scope, budget),
            time.monotonic() + budget,
            lambda: ProviderUnavailable("timed out waiting for a UMA decision"),
        )
        ttl = self._ttl(answer, identity)
        self._answers.put(key, answer, ttl)
        if self._shared is not None and not joined:
            self._shared.put_decision_later(key[0], f"{resource}#{scope}", answer.value, ttl)
        return answer

    async def _shared_answer(self, key: DecisionKey) -> PermissionAnswer | None:
        if self._shared is None:
            return None
        digest, resource, scope = key
        value = await self._shared.get_decision(digest, f"{resource}#{scope}")
        try:
            return PermissionAnswer(value) if value is not None else None
        except ValueError:
            return None

    def _ttl(self, answer: PermissionAnswer, identity: Identity) -> float:
        ttl = (
            self._policy.ttl_s if answer is PermissionAnswer.GRANTED else self._policy.denied_ttl_s
        )
        if identity.expires_at is not None:
            ttl = min(ttl, identity.expires_at - self._wall_clock())
        return ttl

    async def _ask(self, token: str, resource: str, scope: str, budget: float) -> PermissionAnswer:
        if not self._breaker.allow():
            self.outcomes["short_circuited"] += 1
            raise ProviderUnavailable("UMA decisions: circuit open after repeated failures")
        self.calls += 1
        try:
            async with asyncio.timeout(budget):
                endpoint = await self._endpoints.token_endpoint(budget)
                status, body = await self._post(endpoint, token, resource, scope)
            answer = answer_of(status, body)
        except TimeoutError as exc:
            self.outcomes["failed"] += 1
            if budget < self._settings.timeout_s:
                # Cut short by what was left of the check's budget: no verdict on Keycloak.
                self._breaker.abandoned()
            else:
                self._failed()
            raise ProviderUnavailable(f"UMA decision timed out after {budget:.3f}s") from exc
        except ProviderError:
            self.outcomes["failed"] += 1
            self._failed()
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        # Any answer, a denial included, shows that Keycloak decides.
        self._breaker.succeeded()
        self.outcomes[answer.value] += 1
        if answer is PermissionAnswer.MISCONFIGURED:
            log.error(
                "Keycloak does not know %s#%s for audience %s (error %r): check the route's "
                "permission and provider.authorization_services.audience",
                resource,
                scope,
                self._settings.audience,
                oauth_error_code(body),
            )
        return answer

    def _failed(self) -> None:
        if self._breaker.failed():
            log.warning(
                "UMA decisions: circuit open; for %.1fs, checks that need one fail at once",
                self._settings.circuit_breaker.open_s,
            )

    async def _post(
        self, endpoint: str, token: str, resource: str, scope: str
    ) -> tuple[int, bytes]:
        form = {
            "grant_type": UMA_GRANT,
            "audience": self._settings.audience,
            "permission": f"{resource}#{scope}",
            "response_mode": "decision",
            # Never without it: Keycloak would judge our own service account instead.
            "subject_token": token,
        }
        headers = {"Accept": "application/json"}
        credentials = self._credentials
        if credentials.method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            headers["Authorization"] = credentials.basic_authorization()
        else:
            form["client_id"] = credentials.client_id
            form["client_secret"] = credentials.client_secret.reveal()
        try:
            async with self._session.post(endpoint, data=form, headers=headers) as response:
                return response.status, await response.content.read(MAX_ANSWER_BYTES)
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                f"UMA decision at {shown_url(endpoint)}: {failure_reason(exc)}"
            ) from exc


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
        resource: str,
        scope: str,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        source = self._by_provider.get(provider, self._default) if provider else self._default
        return await source.decide(token, identity, resource, scope, timeout_s, provider)
