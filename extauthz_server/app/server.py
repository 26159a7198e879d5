"""Composition root and lifecycle: build everything from Config, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from extauthz_server.app.provider_runtime import ProviderRuntime, start_provider
from extauthz_server.app.tls import ListenerTls
from extauthz_server.cache.local_cache import LocalIdentityCache
from extauthz_server.cache.redis_cache import RedisCache
from extauthz_server.cache.resolver import IdentityResolver
from extauthz_server.cache.shared_replay import SharedReplayGuard
from extauthz_server.config.model import Config, authorizer_settings, load_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Denials
from extauthz_server.core.replay import LocalReplayGuard, ReplayGuard
from extauthz_server.edges.checking import Checking
from extauthz_server.edges.grpc_service import AuthorizationServicer, HealthServicer, add_services
from extauthz_server.edges.http_app import build_http_app, build_logout_app
from extauthz_server.edges.http_authz import HttpAuthzService
from extauthz_server.edges.http_server import HttpServer
from extauthz_server.errors import ConfigError
from extauthz_server.identity.kept_alive_http import KeptAliveHttp
from extauthz_server.identity.router import ProviderRouter
from extauthz_server.metadata.authorization_services import PermissionRouter
from extauthz_server.ops.logs import Auditor, audit_sink, lines_dropped
from extauthz_server.ops.metrics import CacheReadings, CheckMetrics, MetricsRegistry
from extauthz_server.ops.tracing import Tracing, build_tracing
from extauthz_server.revocation.endpoint import BackchannelLogout

log = logging.getLogger(__name__)

HTTP_POOL_SIZE = 100


def _split_listen(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _tls_mode(config: Config) -> str | None:
    """What the gRPC and HTTP authorization listeners speak, for the `serving` line."""
    tls = config.server.tls
    if tls is None:
        return None
    return "mutual" if tls.mutual else "server"


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
        # The HTTP authorization listener's port; 0 while it is off.
        self.http_authz_port = 0
        self._session: aiohttp.ClientSession | None = None
        # Introspection only: the hottest outbound call has a client of its own, leaner.
        self._introspection_http: KeptAliveHttp | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._logout_http: web.AppRunner | None = None
        # The back-channel logout listener's port; 0 while logouts are on http_listen.
        self.logout_port = 0
        self._http_authz: HttpServer | None = None
        # TLS on the gRPC and HTTP authorization listeners (server.tls); None: plaintext.
        self.tls: ListenerTls | None = None
        self._health = HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        self.providers: list[ProviderRuntime] = []
        self.metrics = CheckMetrics()
        self.authorizer: Authorizer | None = None

    @property
    def resolver(self) -> IdentityResolver | None:
        """The first provider's resolver (the only one in the single-provider form)."""
        return self.providers[0].resolver if self.providers else None

    @property
    def local_cache(self) -> LocalIdentityCache | None:
        return self.providers[0].local if self.providers else None

    @property
    def shared_cache(self) -> RedisCache | None:
        return self.providers[0].shared if self.providers else None

    def _cache_readings(self) -> CacheReadings:
        """Summed over the providers."""
        stats = [p.resolver.stats for p in self.providers]
        shared = [p.shared for p in self.providers if p.shared is not None]
        enrichments = [p.enrichment for p in self.providers if p.enrichment is not None]
        keycloak: Counter[str] = Counter()
        for decisions in (p.decisions for p in self.providers if p.decisions is not None):
            keycloak["cache_hit"] += decisions.cache_hits
            keycloak["shared_hit"] += decisions.shared_hits
            keycloak["stale_served"] += decisions.stale_served
            keycloak.update(decisions.outcomes)
        return CacheReadings(
            l1_hits=sum(s.l1_hits for s in stats),
            l2_hits=sum(s.l2_hits for s in stats),
            misses=sum(s.misses for s in stats),
            stale_served=sum(s.stale_served for s in stats),
            saturated=sum(s.saturated for s in stats),
            in_flight=sum(s.in_flight for s in stats),
            l1_entries=sum(len(p.local) for p in self.providers),
            l1_bytes=sum(p.local.size_bytes for p in self.providers),
            redis_errors=sum(c.errors for c in shared),
            redis_writes_dropped=sum(c.writes_dropped for c in shared),
            redis_available=all(c.available for c in shared) if shared else None,
            permission_cache_hits=sum(e.stats.cache_hits for e in enrichments),
            permission_calls=sum(e.stats.calls for e in enrichments),
            permission_failures=sum(e.stats.failures for e in enrichments),
            permission_short_circuits=sum(e.stats.short_circuited for e in enrichments),
            keycloak_permission_checks=keycloak,
            log_lines_dropped=lines_dropped(),
        )

    def reload(self, config_path: Path) -> bool:
        """Apply the routes, role mapping, header names and realm of the file at once, or
        keep the configuration in force when the file does not validate. The TLS files in
        force are read again either way (`ListenerTls.reload`); the result is the file's."""
        if self.tls is not None:
            self.tls.reload()
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
                ("provider", old.providers, new.providers),
                ("cache", old.cache, new.cache),
                (
                    "identity.claims in routes[].when",
                    old.policy.reads_claims,
                    new.policy.reads_claims,
                ),
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

    def _replay_guard(self) -> ReplayGuard:
        """DPoP proofs are single-use across replicas when they share Redis."""
        shared = self.providers[0].shared if self.providers else None
        if shared is not None:
            return SharedReplayGuard(shared)
        return LocalReplayGuard(self.config.sender.replay_max_entries)

    def is_ready(self) -> bool:
        return bool(self.providers) and all(p.ready for p in self.providers)

    async def start(self) -> None:
        config = self.config
        provider = config.provider
        if config.server.tls is not None:
            # First: files changed since the configuration was read stop the start here.
            self.tls = ListenerTls(config.server.tls)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=HTTP_POOL_SIZE, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._introspection_http = KeptAliveHttp(max_connections=HTTP_POOL_SIZE)
        for provider_config in config.providers:
            runtime = await start_provider(
                config,
                provider_config,
                self._session,
                self.metrics,
                self._tracing,
                self._tasks,
                self._introspection_http,
            )
            self.providers.append(runtime)
            self._tasks.append(asyncio.create_task(runtime.prepare()))
        router = ProviderRouter([p.entry() for p in self.providers])
        deciding = {p.config.name: p.decisions for p in self.providers if p.decisions is not None}
        self.authorizer = Authorizer(
            authorizer_settings(config),
            router,
            permissions=PermissionRouter(deciding) if deciding else None,
            replay_guard=self._replay_guard(),
            provider_of=router.provider_of,
            holding=router.holding,
        )
        checking = Checking(
            self.authorizer,
            Denials(provider.realm),
            max(p.timeout_s for p in config.providers),
            self.metrics,
            Auditor(config.audit_allow_sample_rate, sink=audit_sink()),
        )
        servicer = AuthorizationServicer(checking, self._tracing)
        # Past the bound grpc answers RESOURCE_EXHAUSTED at once, which Envoy turns into a
        # 503 (status_on_error), instead of queueing checks that would time out anyway.
        self._grpc = grpc.aio.server(
            maximum_concurrent_rpcs=config.server.max_concurrent_checks,
            options=[("grpc.so_reuseport", int(self._reuse_port))],
        )
        add_services(self._grpc, servicer, self._health)
        if self.tls is not None:
            self.grpc_port = self._grpc.add_secure_port(
                config.server.grpc_listen, self.tls.grpc_credentials()
            )
        else:
            self.grpc_port = self._grpc.add_insecure_port(config.server.grpc_listen)
        await self._grpc.start()

        logout_providers = [p.logout() for p in self.providers if p.config.logout_audiences]
        logout = (
            BackchannelLogout(logout_providers, self.metrics.logouts) if logout_providers else None
        )
        registry = MetricsRegistry(self.metrics, self._cache_readings)
        authorizer = self.authorizer
        separate_logout = config.server.logout_listen is not None
        self._http, self.http_port = await self._serve_http(
            build_http_app(
                self.is_ready,
                registry.render,
                None if separate_logout else logout,
                # Read per request: a reload may bring new keys.
                identity_token=lambda: authorizer.settings.identity_token,
            ),
            config.server.http_listen,
        )
        if config.server.logout_listen is not None and logout is not None:
            self._logout_http, self.logout_port = await self._serve_http(
                build_logout_app(logout), config.server.logout_listen
            )
        if config.server.http_authz_listen is not None:
            self.http_authz_port = await self._start_http_authz(
                HttpAuthzService(checking, config.sender.certificate_header),
                config.server.http_authz_listen,
            )
        log.info(
            "serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "logout_port": self.logout_port or None,
                "http_authz_port": self.http_authz_port or None,
                "tls": _tls_mode(config),
                "event_loop": type(asyncio.get_running_loop()).__module__,
            },
        )

    async def _serve_http(self, app: web.Application, listen: str) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = _split_listen(listen)
        await web.TCPSite(runner, host, port, reuse_port=self._reuse_port or None).start()
        return runner, int(runner.addresses[0][1])

    async def _start_http_authz(self, service: HttpAuthzService, listen: str) -> int:
        self._http_authz = HttpServer(service.handle)
        host, port = _split_listen(listen)
        return await self._http_authz.start(
            host,
            port,
            reuse_port=self._reuse_port,
            tls=self.tls.http_context() if self.tls is not None else None,
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight checks finish within the grace period, then close."""
        self._health.set_not_serving()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # Both edges stop accepting at once and share the grace period.
        await asyncio.gather(
            *(
                [self._http_authz.stop(self.config.server.grace_period_s)]
                if self._http_authz is not None
                else []
            ),
            *([self._grpc.stop(self.config.server.grace_period_s)] if self._grpc else []),
        )
        for runner in (self._http, self._logout_http):
            if runner is not None:
                await runner.cleanup()
        for provider in self.providers:
            await provider.close()
        if self._introspection_http is not None:
            await self._introspection_http.close()
        if self._session is not None:
            await self._session.close()
        self._tracing.close()


def settle_heap() -> None:
    """Move what start-up built (modules, grpc, protobuf descriptors, the compiled
    configuration) out of the cyclic collector's reach. They live as long as the process;
    without this, every full collection walks them all again: about 10 % of an uncached
    Check's time, 4 % after. Objects built later, a reloaded configuration included, are
    collected as usual; of a configuration a reload replaces, only what sits in reference
    cycles stays, and only the first one is frozen."""
    gc.collect()
    gc.freeze()


async def serve(
    config: Config, *, config_path: Path | None = None, reuse_port: bool = False
) -> None:
    server = Server(config, reuse_port=reuse_port)
    await server.start()
    settle_heap()
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
