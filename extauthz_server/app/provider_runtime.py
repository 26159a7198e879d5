"""One provider at run time: its endpoints, keys, strategy, caches and resolver, put together
from its configuration."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from extauthz_server.app.strategy_context import StrategyContext, build_strategy, jwks_cache
from extauthz_server.cache.entries import seal_key
from extauthz_server.cache.local_cache import LocalIdentityCache
from extauthz_server.cache.redis_cache import RedisCache, connect
from extauthz_server.cache.resolver import CachePolicy, IdentityResolver
from extauthz_server.config.model import Config
from extauthz_server.config.providers import JWT, JWT_THEN_INTROSPECTION, ProviderConfig
from extauthz_server.core.secret import Secret
from extauthz_server.errors import ProviderError
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import HttpTransport
from extauthz_server.identity.jwks import JwksCache
from extauthz_server.identity.router import ProviderEntry, TokenSource
from extauthz_server.metadata.authorization_services import DecisionCachePolicy, UmaDecisions
from extauthz_server.metadata.enrichment import EnrichedIdentitySource, build_enriched_source
from extauthz_server.ops.metrics import CheckMetrics
from extauthz_server.ops.tracing import Tracing
from extauthz_server.revocation.endpoint import LogoutProvider

log = logging.getLogger(__name__)

# How long a logout is remembered in-process. Past the cache's own horizon this matters for
# the JWT strategies, whose tokens validate until their exp: Keycloak's access tokens
# outlive a logout by at most their lifespan (minutes, by default), never a day.
REVOKED_SESSION_MEMORY_S = 86_400.0

REDIS_CONNECT_TIMEOUT_S = 2.0
PREPARE_RETRY_MAX_S = 30.0


@dataclass(slots=True)
class ProviderRuntime:
    config: ProviderConfig
    endpoints: EndpointSource
    keys: JwksCache
    local: LocalIdentityCache
    shared: RedisCache | None
    resolver: IdentityResolver
    source: TokenSource
    enrichment: EnrichedIdentitySource | None = None
    # Keycloak Authorization Services of this provider, when configured.
    decisions: UmaDecisions | None = None

    @property
    def _uses_jwt(self) -> bool:
        return self.config.strategy in (JWT, JWT_THEN_INTROSPECTION)

    @property
    def ready(self) -> bool:
        """What the first checks need is known: the introspection endpoint, the keys."""
        if self.config.introspects and not self.endpoints.known:
            return False
        return self.keys.loaded or not self._uses_jwt

    async def prepare(self) -> None:
        """Discover the endpoints and load the keys before the first check needs them,
        retrying with backoff while the provider cannot be reached."""
        delay = 0.5
        while not self.ready:
            try:
                if self.config.introspects:
                    await self.endpoints.introspection_endpoint(self.config.timeout_s * 10)
                if self._uses_jwt:
                    await self.keys.load(self.config.timeout_s * 10)
            except ProviderError as exc:
                log.warning(
                    "provider %s not reachable yet (%s); retrying in %.1fs",
                    self.config.name,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, PREPARE_RETRY_MAX_S)

    def entry(self) -> ProviderEntry:
        # Enriched identities are the enrichment's own, and it keeps them by its own rules.
        still_held = self.resolver.still_held if self.enrichment is None else None
        return ProviderEntry(self.config.name, self.endpoints, self.source, still_held)

    def logout(self) -> LogoutProvider:
        endpoints = self.endpoints
        return LogoutProvider(
            self.keys,
            lambda: endpoints.issuer,
            self.config.logout_audiences,
            self.resolver.invalidate,
        )

    async def close(self) -> None:
        """Before the HTTP session closes."""
        if self.enrichment is not None:
            await self.enrichment.close()
        if self.shared is not None:
            await self.shared.close()


async def start_provider(
    config: Config,
    provider: ProviderConfig,
    session: aiohttp.ClientSession,
    metrics: CheckMetrics,
    tracing: Tracing,
    tasks: list[asyncio.Task[None]],
    introspection_http: HttpTransport | None = None,
) -> ProviderRuntime:
    """Build the provider's pipeline; its Redis connection is made (and checked) here.

    The L1 bounds are shared evenly among providers, so several providers take no more
    memory than one. With several providers each has its own Redis namespace.
    """
    endpoints = EndpointSource(
        session, provider.issuer, provider.introspection_endpoint, provider.jwks_uri
    )
    keys = jwks_cache(session, endpoints, provider)
    strategy = build_strategy(
        StrategyContext(provider, session, endpoints, keys, metrics, tracing, introspection_http)
    )
    cache = config.cache
    share = len(config.providers)
    horizon_s = max(cache.ttl_s + cache.stale_if_error_s, cache.negative_ttl_s)
    local_entries = max(1, cache.max_entries // share)
    local = LocalIdentityCache(
        local_entries,
        max(64 * 1024, cache.max_bytes // share),
        max(horizon_s, REVOKED_SESSION_MEMORY_S),
    )
    shared = None
    if cache.redis_url is not None:
        namespace = cache.redis_namespace
        if share > 1:
            namespace = f"{namespace}:{provider.name}"
        shared = RedisCache(
            connect(
                cache.redis_url,
                cache.redis_cluster,
                cache.redis_timeout_s,
                cache.redis_max_connections,
            ),
            namespace,
            cache.redis_timeout_s,
            horizon_s,
            seal_key=_seal_key(cache.redis_signing_key, provider),
            revoked_memory_s=REVOKED_SESSION_MEMORY_S,
            max_revoked_read=local_entries,
        )
        await shared.warm_up(REDIS_CONNECT_TIMEOUT_S)
        tasks.append(asyncio.create_task(shared.listen(local.invalidate, local.catch_up)))
    resolver = IdentityResolver(
        strategy,
        local,
        CachePolicy(
            cache.ttl_s,
            cache.negative_ttl_s,
            cache.stale_if_error_s,
            keep_claims=config.policy.reads_claims,
        ),
        shared=shared,
        max_concurrency=provider.max_concurrency,
    )
    credentials = provider.credentials
    enrichment = None
    if provider.permissions is not None:
        enrichment = build_enriched_source(
            resolver,
            provider.permissions,
            session,
            provider_name=provider.name,
            credentials=credentials,
            endpoints=endpoints,
        )
    source: TokenSource = enrichment or resolver
    decisions = None
    if provider.authorization_services is not None and credentials is not None:
        decisions = UmaDecisions(
            session,
            endpoints,
            credentials,
            provider.authorization_services,
            DecisionCachePolicy(
                cache.ttl_s, cache.negative_ttl_s, cache.max_entries, cache.stale_if_error_s
            ),
            shared=shared,
        )
    return ProviderRuntime(
        provider, endpoints, keys, local, shared, resolver, source, enrichment, decisions
    )


def _seal_key(configured: Secret | None, provider: ProviderConfig) -> bytes | None:
    secret = configured if configured is not None else provider.client_secret
    if secret is None:
        log.warning(
            "cache entries of provider %s are not sealed in redis (no cache.redis_signing_key "
            "and no client secret): whoever can write to redis can place identities there",
            provider.name,
        )
        return None
    return seal_key(secret)
