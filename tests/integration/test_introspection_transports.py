"""Token introspection comes out the same through the server's kept-alive client as through
an aiohttp session (what a strategy built without the server gets): the same document, the
same refusals, the same words for each failure; and the server introspects over one
kept-alive connection that it closes when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
import grpc
import pytest

from extauthz_server.app.server import Server
from extauthz_server.core.secret import Secret
from extauthz_server.errors import ProviderError
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import (
    ClientAuthMethod,
    ClientCredentials,
    HttpTransport,
    IntrospectionClient,
    SessionTransport,
)
from extauthz_server.identity.kept_alive_http import KeptAliveHttp
from tests.support.check_requests import call_check, check_request
from tests.support.configs import DEMO_CLIENT_SECRET, seed_config
from tests.support.keycloak_standin import Fault, KeycloakStandIn, active_document
from tests.support.net import free_port
from tests.support.scripted_http import Reply, ScriptedServer, answer

CREDENTIALS = ClientCredentials(
    "ext-authz", Secret(DEMO_CLIENT_SECRET), ClientAuthMethod.CLIENT_SECRET_BASIC
)
TRANSPORTS = ["kept-alive", "aiohttp"]


@pytest.fixture
async def kept_alive() -> AsyncIterator[KeptAliveHttp]:
    http = KeptAliveHttp()
    yield http
    await http.close()


def transport(
    name: str, session: aiohttp.ClientSession, kept_alive: KeptAliveHttp
) -> HttpTransport:
    return kept_alive if name == "kept-alive" else SessionTransport(session)


async def outcome(
    http: HttpTransport,
    session: aiohttp.ClientSession,
    endpoint: str,
    token: str,
    timeout_s: float = 2.0,
) -> Mapping[str, object] | str:
    """The document, or the error's class and words."""
    endpoints = EndpointSource(session, endpoint.rsplit("/protocol/", 1)[0], endpoint)
    client = IntrospectionClient(http, endpoints, CREDENTIALS, timeout_s)
    try:
        return await client.introspect(token)
    except ProviderError as exc:
        return f"{type(exc).__name__}: {exc}"


ANSWERS = [
    (Fault.NONE, "document"),
    (Fault.CHUNKED, "document"),
    (Fault.SERVER_ERROR_ONCE, "document"),
    (Fault.SERVER_ERROR, "ProviderUnavailable"),
    (Fault.HTML, "ProviderUnavailable"),
    (Fault.MALFORMED_JSON, "ProviderUnavailable"),
    (Fault.NOT_AN_OBJECT, "ProviderUnavailable"),
    (Fault.REJECT_CLIENT_NEW, "ProviderRejectedClient"),
    (Fault.CLIENT_NOT_ALLOWED, "ProviderRejectedClient"),
    (Fault.RESET, "ProviderUnavailable"),
]


@pytest.mark.parametrize(("fault", "told"), ANSWERS, ids=[fault.value for fault, _ in ANSWERS])
async def test_each_answer_of_the_provider_comes_out_the_same_through_both_transports(
    standin: KeycloakStandIn,
    session: aiohttp.ClientSession,
    kept_alive: KeptAliveHttp,
    fault: Fault,
    told: str,
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"], exp=2_000_000_000)
    outcomes = []
    for name in TRANSPORTS:
        standin.fault = fault
        http = transport(name, session, kept_alive)
        outcomes.append(await outcome(http, session, standin.introspection_endpoint, "bob-token"))

    assert outcomes[0] == outcomes[1]
    if told == "document":
        assert isinstance(outcomes[0], Mapping)
        assert outcomes[0]["sub"] == "sub-bob"
    else:
        assert str(outcomes[0]).startswith(f"{told}: introspection ")
    assert {call.authorization for call in standin.calls} == {CREDENTIALS.basic_authorization()}
    assert {call.form["token"] for call in standin.calls} == {"bob-token"}


async def test_a_slow_provider_is_cut_off_the_same_through_both_transports(
    standin: KeycloakStandIn, session: aiohttp.ClientSession, kept_alive: KeptAliveHttp
) -> None:
    standin.fault, standin.delay_s = Fault.SLOW, 1.0
    endpoint = standin.introspection_endpoint

    outcomes = [
        await outcome(transport(name, session, kept_alive), session, endpoint, "t", 0.1)
        for name in TRANSPORTS
    ]

    assert outcomes == ["ProviderUnavailable: introspection timed out after 0.100s"] * 2
    assert kept_alive.open_connections == 0


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_refused_connection_is_told_the_same_through_both_transports(
    session: aiohttp.ClientSession, kept_alive: KeptAliveHttp, name: str
) -> None:
    endpoint = (
        f"http://127.0.0.1:{free_port()}/realms/demo/protocol/openid-connect/token/introspect"
    )

    told = await outcome(transport(name, session, kept_alive), session, endpoint, "t")

    assert told == (
        f"ProviderUnavailable: introspection endpoint {endpoint}: "
        "connection refused (is anything listening at that address?)"
    )


async def test_the_server_introspects_over_one_kept_alive_connection_and_closes_it_on_stop(
    standin: KeycloakStandIn,
) -> None:
    provider = ScriptedServer([Reply(answer(b'{"active": false}'))])
    await provider.start()
    config = seed_config(standin.issuer, introspection_endpoint=provider.url(), ttl_seconds=0)
    server = Server(config)
    try:
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            for index in range(3):
                await call_check(channel, check_request("/api/forms", token=f"token-{index}"))
        await server.stop()

        assert [request.connection for request in provider.requests] == [0, 0, 0]
        # aiohttp names itself in a User-Agent header; the kept-alive client sends none.
        assert all(b"user-agent:" not in r.head.lower() for r in provider.requests)
        async with asyncio.timeout(5.0):
            await provider.client_closed[0].wait()
    finally:
        await provider.close()
