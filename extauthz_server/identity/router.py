"""Identity providers: each one's strategy built from its configuration, and the router that
sends a token to the provider that issued it (or the one its route names).

Every provider has its own resolver, and so its own caches: two providers never share a
cache entry, even for tokens of the same `sub`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from extauthz_server.config.providers import (
    INTROSPECTION,
    JWT,
    JWT_THEN_INTROSPECTION,
    ProviderConfig,
)
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.errors import ConfigError
from extauthz_server.identity.access_token import unverified_issuer
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientCredentials, IntrospectionClient
from extauthz_server.identity.jwks import JwksCache
from extauthz_server.identity.strategies import (
    IdentityStrategy,
    IntrospectionStrategy,
    IssuerSource,
    JwtStrategy,
    JwtThenIntrospectionStrategy,
    JwtVerifier,
)
from extauthz_server.ops.metrics import CheckMetrics
from extauthz_server.ops.tracing import NoTracing, Tracing

log = logging.getLogger(__name__)

JWKS_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class StrategyContext:
    """What a strategy may build on. A strategy of your own (`strategy: pkg.mod:Factory`) is
    made by calling `Factory(context)`; it can compose the built-ins through the methods."""

    provider: ProviderConfig
    session: aiohttp.ClientSession
    endpoints: EndpointSource
    keys: JwksCache
    metrics: CheckMetrics
    tracing: Tracing = field(default_factory=NoTracing)

    @property
    def options(self) -> Mapping[str, object]:
        """`strategy_options` from the provider's configuration, as written."""
        return self.provider.strategy_options

    def introspection(self) -> IntrospectionStrategy:
        provider = self.provider
        if provider.client_secret is None:
            raise ConfigError(
                provider.key("client_secret"), "introspection needs the client credentials"
            )
        client = IntrospectionClient(
            self.session,
            self.endpoints,
            ClientCredentials(provider.client_id, provider.client_secret, provider.auth_method),
            provider.timeout_s,
            self.tracing,
        )
        return IntrospectionStrategy(client, provider.role_claims, self.metrics)

    def jwt_verifier(self) -> JwtVerifier:
        return JwtVerifier(self.keys, self.endpoints, self.provider.jwt.rules, self.metrics)

    def jwt(self) -> JwtStrategy:
        return JwtStrategy(self.jwt_verifier(), self.provider.role_claims)

    def jwt_then_introspection(self) -> JwtThenIntrospectionStrategy:
        return JwtThenIntrospectionStrategy(
            self.jwt_verifier(),
            self.introspection(),
            self.provider.role_claims,
            self.provider.jwt.complete_when_claims,
        )


def build_strategy(context: StrategyContext) -> IdentityStrategy:
    name = context.provider.strategy
    if name == INTROSPECTION:
        return context.introspection()
    if name == JWT:
        if not context.provider.jwt.rules.audiences:
            log.warning(
                "provider %s: strategy jwt without jwt.audiences accepts tokens the issuer "
                "made for any client",
                context.provider.name,
            )
        return context.jwt()
    if name == JWT_THEN_INTROSPECTION:
        return context.jwt_then_introspection()
    module_name, _, attribute = name.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    strategy = factory(context)
    if not isinstance(strategy, IdentityStrategy):
        raise ConfigError(
            context.provider.key("strategy"),
            f"{name} did not return an object with an async identify(token, timeout_s)",
        )
    return strategy


def jwks_cache(
    session: aiohttp.ClientSession, endpoints: EndpointSource, provider: ProviderConfig
) -> JwksCache:
    return JwksCache(
        session,
        endpoints.jwks_uri,
        JWKS_TIMEOUT_S,
        min_refetch_interval_s=provider.jwt.jwks_refetch_interval_s,
    )


class TokenSource(Protocol):
    """One provider's identities: its resolver, or the permissions enrichment around it."""

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive: ...


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    name: str
    # The issuers this provider's tokens may name (configured and discovered).
    issuers: IssuerSource
    source: TokenSource


class ProviderRouter:
    """The IdentitySource of the authorizer when there are several providers (and, trivially,
    when there is one).

    A route that names a provider gets that one. Otherwise a JWT goes to the provider whose
    issuer it names (read unverified, only to choose; that provider then verifies it), an
    opaque token to the first provider, and a JWT naming no configured issuer is turned away
    without any call.
    """

    def __init__(self, entries: Sequence[ProviderEntry]) -> None:
        if not entries:
            raise ValueError("at least one provider is needed")
        self._entries = tuple(entries)
        self._by_name = {entry.name: entry for entry in entries}
        self._only = entries[0] if len(entries) == 1 else None

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        if provider is not None:
            return await self._by_name[provider].source.resolve(token, timeout_s)
        entry = self._only or self.choose(token)
        if entry is None:
            return Inactive.UNKNOWN_ISSUER
        return await entry.source.resolve(token, timeout_s)

    def choose(self, token: str) -> ProviderEntry | None:
        issuer = unverified_issuer(token)
        if issuer is None:
            return self._entries[0]
        return next(
            (entry for entry in self._entries if issuer in entry.issuers.accepted_issuers), None
        )
