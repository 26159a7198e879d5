"""Each provider's identity strategy, built from its configuration: a built-in one, or a
strategy of your own (`strategy: pkg.mod:Factory`) made by calling `Factory(context)`."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from extauthz_server.config.providers import (
    INTROSPECTION,
    JWT,
    JWT_THEN_INTROSPECTION,
    ProviderConfig,
)
from extauthz_server.errors import ConfigError
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import (
    HttpTransport,
    IntrospectionClient,
    SessionTransport,
)
from extauthz_server.identity.jwks import JwksCache
from extauthz_server.identity.strategies import (
    IdentityStrategy,
    IntrospectionStrategy,
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
    # What introspection requests travel by; None: through `session`.
    introspection_http: HttpTransport | None = None

    @property
    def options(self) -> Mapping[str, object]:
        """`strategy_options` from the provider's configuration, as written."""
        return self.provider.strategy_options

    def introspection(self) -> IntrospectionStrategy:
        provider = self.provider
        credentials = provider.credentials
        if credentials is None:
            raise ConfigError(
                provider.key("client_secret"), "introspection needs the client credentials"
            )
        http = self.introspection_http
        if http is None:
            http = SessionTransport(self.session)
        client = IntrospectionClient(
            http, self.endpoints, credentials, provider.timeout_s, self.tracing
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
