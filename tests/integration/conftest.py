"""Fixtures: the Keycloak stand-in and our real gRPC server on port 0, talking over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import grpc
import pytest

from extauthz_server.app.server import Server
from extauthz_server.config.model import Config
from extauthz_server.ops.tracing import Tracing
from tests.support.configs import seed_config
from tests.support.keycloak_standin import KeycloakStandIn


@dataclass
class RunningAuthz:
    server: Server
    channel: grpc.aio.Channel

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    async def redis_settled(self) -> None:
        """Wait for the cache entries this server is still writing to Redis."""
        for provider in self.server.providers:
            if provider.shared is not None:
                await provider.shared.settle()


StartAuthz = Callable[..., Awaitable[RunningAuthz]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, as the server's own components use one."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def standin() -> AsyncIterator[KeycloakStandIn]:
    fake = KeycloakStandIn()
    await fake.start()
    yield fake
    await fake.stop()


Launch = Callable[[Config, Tracing | None], Awaitable[RunningAuthz]]


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start our server in-process with a given configuration; stopped after the test."""
    running: list[RunningAuthz] = []

    async def launch(config: Config, tracing: Tracing | None = None) -> RunningAuthz:
        server = Server(config, tracing=tracing)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        authz = RunningAuthz(server, channel)
        running.append(authz)
        return authz

    yield launch
    for authz in running:
        await authz.channel.close()
        await authz.server.stop()


@pytest.fixture
def start_authz(standin: KeycloakStandIn, launch: Launch) -> StartAuthz:
    """Start our server with the seed configuration pointed at the stand-in."""

    async def start(tracing: Tracing | None = None, **options: object) -> RunningAuthz:
        return await launch(seed_config(standin.issuer, **options), tracing)

    return start


@pytest.fixture
async def authz(start_authz: StartAuthz) -> RunningAuthz:
    return await start_authz()
