"""Fixtures: the Keycloak stand-in and our real gRPC server on port 0, talking over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from extauthz_server.server import Server
from extauthz_server.tracing import Tracing
from tests.support.configs import seed_config
from tests.support.keycloak_standin import KeycloakStandIn


@dataclass
class RunningAuthz:
    server: Server
    channel: grpc.aio.Channel

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


StartAuthz = Callable[..., Awaitable[RunningAuthz]]


@pytest.fixture
async def standin() -> AsyncIterator[KeycloakStandIn]:
    fake = KeycloakStandIn()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def start_authz(standin: KeycloakStandIn) -> AsyncIterator[StartAuthz]:
    running: list[RunningAuthz] = []

    async def start(tracing: Tracing | None = None, **options: object) -> RunningAuthz:
        server = Server(seed_config(standin.issuer, **options), tracing=tracing)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        authz = RunningAuthz(server, channel)
        running.append(authz)
        return authz

    yield start
    for authz in running:
        await authz.channel.close()
        await authz.server.stop()


@pytest.fixture
async def authz(start_authz: StartAuthz) -> RunningAuthz:
    return await start_authz()
