"""Composition root and lifecycle: build everything from Config, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from extauthz_server.authorizer import Authorizer
from extauthz_server.config import Config, authorizer_settings, load_config
from extauthz_server.decision import Denials
from extauthz_server.discovery import EndpointSource
from extauthz_server.errors import ConfigError, ProviderError
from extauthz_server.grpc_service import AuthorizationServicer, HealthServicer, add_services
from extauthz_server.http_app import build_http_app
from extauthz_server.introspection import ClientCredentials, IntrospectionClient
from extauthz_server.jwks import JwksCache
from extauthz_server.local_cache import LocalIdentityCache
from extauthz_server.logout_endpoint import BackchannelLogout
from extauthz_server.logs import Auditor
from extauthz_server.metrics import CacheReadings, CheckMetrics, MetricsRegistry
from extauthz_server.redis_cache import RedisCache, connect
from extauthz_server.resolver import CachePolicy, IdentityResolver, ResolverStats
from extauthz_server.tracing import Tracing, build_tracing

log = logging.getLogger(__name__)

HTTP_POOL_SIZE = 100
DISCOVERY_RETRY_MAX_S = 30.0
REDIS_CONNECT_TIMEOUT_S = 2.0
LOGOUT_KEYS_TIMEOUT_S = 2.0


def _split_listen(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Server:
    def __init__(
        self, config: Config, *, reuse_port: bool = False, tracing: Tracing | None = None
    ) -> None:
        self.config = config
        self._tracing = tracing or build_tracing(
            config.tracing_enabled, config.tracing_service_name
        )
        self._reuse_port = reuse_port
        self.grpc_port = 0
        self.http_port = 0
        self._session: aiohttp.ClientSession | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._health = HealthServicer()
        self._endpoints: EndpointSource | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.local_cache: LocalIdentityCache | None = None
        self.shared_cache: RedisCache | None = None
        self.resolver: IdentityResolver | None = None
        self.metrics = CheckMetrics()
        self.authorizer: Authorizer | None = None

    def _cache_readings(self) -> CacheReadings:
        stats = self.resolver.stats if self.resolver is not None else ResolverStats()
        local, shared = self.local_cache, self.shared_cache
        return CacheReadings(
            l1_hits=stats.l1_hits,
            l2_hits=stats.l2_hits,
            misses=stats.misses,
            stale_served=stats.stale_served,
            saturated=stats.saturated,
            in_flight=stats.in_flight,
            l1_entries=len(local) if local is not None else 0,
            l1_bytes=local.size_bytes if local is not None else 0,
            redis_errors=shared.errors if shared is not None else 0,
            redis_available=shared.available if shared is not None else None,
        )

    def reload(self, config_path: Path) -> bool:
        """Apply the routes, role mapping, header names and realm of the file at once, or
        keep the configuration in force when the file does not validate."""
        try:
            new = load_config(config_path, os.environ)
        except ConfigError as exc:
            self.metrics.reloads["failed"] += 1
            log.error("configuration reload rejected, the old one stays in force: %s", exc)
            return False
        old = self.config
        needs_restart = [
            name
            for name, before, after in (
                ("server", old.server, new.server),
                ("provider", old.provider, new.provider),
                ("cache", old.cache, new.cache),
                ("roles.claims", old.role_claims, new.role_claims),
            )
            if before != after
        ]
        if needs_restart:
            log.warning("reload: changes to %s take effect at the next restart", needs_restart)
        if self.authorizer is not None:
            self.authorizer.reconfigure(authorizer_settings(new))
        self.metrics.reloads["ok"] += 1
        log.info("configuration reloaded", extra={"routes": len(new.policy.routes)})
        return True

    def is_ready(self) -> bool:
        return self._endpoints is not None and self._endpoints.known

    async def start(self) -> None:
        config = self.config
        provider = config.provider
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=HTTP_POOL_SIZE, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._endpoints = EndpointSource(
            self._session, provider.issuer, provider.introspection_endpoint, provider.jwks_uri
        )
        introspection = IntrospectionClient(
            self._session,
            self._endpoints,
            ClientCredentials(provider.client_id, provider.client_secret, provider.auth_method),
            provider.timeout_s,
            self._tracing,
        )
        cache = config.cache
        horizon_s = max(cache.ttl_s + cache.stale_if_error_s, cache.negative_ttl_s)
        self.local_cache = LocalIdentityCache(cache.max_entries, cache.max_bytes, horizon_s)
        if cache.redis_url is not None:
            self.shared_cache = RedisCache(
                connect(
                    cache.redis_url,
                    cache.redis_cluster,
                    cache.redis_timeout_s,
                    cache.redis_max_connections,
                ),
                cache.redis_namespace,
                cache.redis_timeout_s,
                horizon_s,
            )
            await self.shared_cache.warm_up(REDIS_CONNECT_TIMEOUT_S)
            self._tasks.append(
                asyncio.create_task(self.shared_cache.listen(self.local_cache.invalidate))
            )
        self.resolver = IdentityResolver(
            introspection,
            self.local_cache,
            CachePolicy(cache.ttl_s, cache.negative_ttl_s, cache.stale_if_error_s),
            config.role_claims,
            shared=self.shared_cache,
            max_concurrency=provider.max_concurrency,
            metrics=self.metrics,
        )
        resolver = self.resolver
        self.authorizer = Authorizer(authorizer_settings(config), resolver)
        servicer = AuthorizationServicer(
            self.authorizer,
            Denials(provider.realm),
            provider.timeout_s,
            self.metrics,
            Auditor(config.audit_allow_sample_rate),
            self._tracing,
        )
        # Past the bound grpc answers RESOURCE_EXHAUSTED at once, which Envoy turns into a
        # 503 (status_on_error), instead of queueing checks that would time out anyway.
        self._grpc = grpc.aio.server(
            maximum_concurrent_rpcs=config.server.max_concurrent_checks,
            options=[("grpc.so_reuseport", int(self._reuse_port))],
        )
        add_services(self._grpc, servicer, self._health)
        self.grpc_port = self._grpc.add_insecure_port(config.server.grpc_listen)
        await self._grpc.start()

        logout = None
        if provider.logout_audiences:
            keys = JwksCache(self._session, self._endpoints.jwks_uri, LOGOUT_KEYS_TIMEOUT_S)
            endpoints = self._endpoints
            logout = BackchannelLogout(
                keys,
                lambda: endpoints.issuer,
                provider.logout_audiences,
                resolver.invalidate,
                self.metrics.logouts,
            )
        registry = MetricsRegistry(self.metrics, self._cache_readings)
        self._http = web.AppRunner(
            build_http_app(self.is_ready, registry.render, logout), access_log=None
        )
        await self._http.setup()
        http_host, http_port = _split_listen(config.server.http_listen)
        site = web.TCPSite(self._http, http_host, http_port, reuse_port=self._reuse_port or None)
        await site.start()
        self.http_port = int(self._http.addresses[0][1])
        self._tasks.append(asyncio.create_task(self._discover_until_known()))
        log.info("serving", extra={"grpc_port": self.grpc_port, "http_port": self.http_port})

    async def _discover_until_known(self) -> None:
        """Learn the introspection endpoint before the first check needs it."""
        assert self._endpoints is not None  # noqa: S101 - set in start()
        delay = 0.5
        while not self._endpoints.known:
            try:
                await self._endpoints.introspection_endpoint(self.config.provider.timeout_s * 10)
            except ProviderError as exc:
                log.warning("OIDC discovery failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DISCOVERY_RETRY_MAX_S)

    async def stop(self) -> None:
        """Stop accepting, let in-flight checks finish within the grace period, then close."""
        self._health.set_not_serving()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._grpc is not None:
            await self._grpc.stop(self.config.server.grace_period_s)
        if self._http is not None:
            await self._http.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.shared_cache is not None:
            await self.shared_cache.close()
        self._tracing.close()


async def serve(
    config: Config, *, config_path: Path | None = None, reuse_port: bool = False
) -> None:
    server = Server(config, reuse_port=reuse_port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, server.reload, config_path)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
