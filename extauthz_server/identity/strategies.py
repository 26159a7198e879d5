"""Identity strategies: where a provider's identities and roles come from.

A strategy turns a bearer token into an Identity (with provider roles) or an Inactive
reason, and raises ProviderError when it cannot tell. The resolver puts its caches and
concurrency limit around whichever strategy a provider uses, so a strategy does no caching
of its own. Built in: `introspection` (RFC 7662), `jwt` (local validation against the
provider's JWKS) and `jwt_then_introspection` (validate locally, then introspect for roles).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from extauthz_server.core.identity import (
    EXPIRY_SKEW_SECONDS,
    Identity,
    Inactive,
    identity_from_claims,
    identity_from_introspection,
)
from extauthz_server.core.roles import ClaimPath
from extauthz_server.errors import ProviderRejectedClient, ProviderUnavailable
from extauthz_server.identity.access_token import (
    JwtRules,
    screen_access_token,
    verify_access_token,
    verify_access_token_at_hand,
)
from extauthz_server.identity.signing_keys import KeysAtHand, KeySource
from extauthz_server.ops.metrics import CheckMetrics


@runtime_checkable
class IdentityStrategy(Protocol):
    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        """Who `token` belongs to, within `timeout_s`; raises ProviderError when that cannot
        be learnt. The answer is cached per token, so it may depend on nothing else."""
        ...


@runtime_checkable
class ScreeningStrategy(IdentityStrategy, Protocol):
    """A strategy that can turn some tokens away from their shape alone, without I/O; the
    resolver asks before any cache lookup, so garbage never costs a Redis call."""

    def screen(self, token: str) -> Inactive | None: ...


@runtime_checkable
class AtHandStrategy(IdentityStrategy, Protocol):
    """A strategy that can often answer with no I/O at all (a JWT whose signing key is
    loaded): the resolver then asks it directly, without the coalescing and concurrency
    limit that calls to a provider need."""

    def identify_at_hand(self, token: str) -> Identity | Inactive | None:
        """The answer `identify` would give, when it needs no I/O; None otherwise."""
        ...


class Introspector(Protocol):
    async def introspect(
        self, token: str, timeout_s: float | None = None
    ) -> Mapping[str, object]: ...


class IssuerSource(Protocol):
    @property
    def accepted_issuers(self) -> frozenset[str]:
        """The `iss` values the provider's tokens may carry."""
        ...


class IntrospectionStrategy:
    """RFC 7662: the provider says whether the token is active and whose it is."""

    def __init__(
        self,
        introspector: Introspector,
        role_claims: tuple[ClaimPath, ...],
        metrics: CheckMetrics,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._introspector = introspector
        self._role_claims = role_claims
        self._metrics = metrics
        self._wall_clock = wall_clock
        self.calls = 0

    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        self.calls += 1
        started = time.monotonic()
        try:
            document = await self._introspector.introspect(token, timeout_s)
        except ProviderRejectedClient:
            self._metrics.record_introspection("rejected_client", time.monotonic() - started)
            raise
        except ProviderUnavailable:
            self._metrics.record_introspection("error", time.monotonic() - started)
            raise
        result = identity_from_introspection(document, self._role_claims, self._wall_clock())
        outcome = "active" if isinstance(result, Identity) else "inactive"
        self._metrics.record_introspection(outcome, time.monotonic() - started)
        return result


class JwtVerifier:
    """Signature, algorithm, issuer, lifetime, audience and type of a JWT access token."""

    def __init__(
        self,
        keys: KeySource,
        endpoints: IssuerSource,
        rules: JwtRules,
        metrics: CheckMetrics,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._keys_at_hand = keys if isinstance(keys, KeysAtHand) else None
        self._endpoints = endpoints
        self.rules = rules
        self._metrics = metrics
        self._wall_clock = wall_clock

    def screen(self, token: str) -> Inactive | None:
        rejected = screen_access_token(token, self.rules)
        if rejected is not None:
            self._metrics.jwt_validations["invalid"] += 1
        return rejected

    async def verify(self, token: str) -> Mapping[str, object] | Inactive:
        result = await verify_access_token(
            token, self._keys, self.rules, self._endpoints.accepted_issuers, self._wall_clock()
        )
        self._count(result)
        return result

    def verify_at_hand(self, token: str) -> Mapping[str, object] | Inactive | None:
        """As `verify`, when the signing key is already loaded; None when it is not."""
        if self._keys_at_hand is None:
            return None
        result = verify_access_token_at_hand(
            token,
            self._keys_at_hand,
            self.rules,
            self._endpoints.accepted_issuers,
            self._wall_clock(),
        )
        if result is not None:
            self._count(result)
        return result

    def _count(self, result: Mapping[str, object] | Inactive) -> None:
        self._metrics.jwt_validations["invalid" if isinstance(result, Inactive) else "valid"] += 1

    def identity(
        self, claims: Mapping[str, object], role_claims: tuple[ClaimPath, ...]
    ) -> Identity | Inactive:
        # Past `exp` by less than the leeway is still valid; EXPIRY_SKEW is added back
        # because identity_from_claims holds it in reserve for the provider's clock.
        now = self._wall_clock() - self.rules.leeway_s - EXPIRY_SKEW_SECONDS
        return identity_from_claims(claims, role_claims, now, require_subject_claim=True)


class JwtStrategy:
    """Self-contained access tokens, validated locally; roles from the token's own claims."""

    def __init__(self, verifier: JwtVerifier, role_claims: tuple[ClaimPath, ...]) -> None:
        self._verifier = verifier
        self._role_claims = role_claims

    def screen(self, token: str) -> Inactive | None:
        return self._verifier.screen(token)

    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        return self._identity_of(await self._verifier.verify(token))

    def identify_at_hand(self, token: str) -> Identity | Inactive | None:
        claims = self._verifier.verify_at_hand(token)
        return None if claims is None else self._identity_of(claims)

    def _identity_of(self, claims: Mapping[str, object] | Inactive) -> Identity | Inactive:
        if isinstance(claims, Inactive):
            return claims
        return self._verifier.identity(claims, self._role_claims)


class JwtThenIntrospectionStrategy:
    """Keycloak's lightweight tokens: a forged, expired or garbage token is turned away
    locally with no call to the provider; a genuine one is introspected for its roles,
    unless it carries every claim in `complete_when_claims` (then it speaks for itself)."""

    def __init__(
        self,
        verifier: JwtVerifier,
        introspection: IntrospectionStrategy,
        role_claims: tuple[ClaimPath, ...],
        complete_when_claims: tuple[str, ...] = (),
    ) -> None:
        self._verifier = verifier
        self._introspection = introspection
        self._role_claims = role_claims
        self._complete_when_claims = complete_when_claims

    def screen(self, token: str) -> Inactive | None:
        return self._verifier.screen(token)

    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        started = time.monotonic()
        claims = await self._verifier.verify(token)
        if isinstance(claims, Inactive):
            return claims
        if self._complete_when_claims and all(c in claims for c in self._complete_when_claims):
            return self._verifier.identity(claims, self._role_claims)
        remaining = timeout_s - (time.monotonic() - started)
        if remaining <= 0:
            raise ProviderUnavailable("no time left to introspect after validating the JWT")
        return await self._introspection.identify(token, remaining)
