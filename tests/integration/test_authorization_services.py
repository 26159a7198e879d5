"""Keycloak Authorization Services as a route's decision, over HTTP: the UMA request we send
(checked at a stand-in that records it) and the decisions of the real Keycloak of the test
session, realm `facts` (keycloak/facts-realm.json)."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web

from extauthz_server.cache.redis_cache import RedisCache, connect
from extauthz_server.config.model import parse_config
from extauthz_server.core.identity import Identity
from extauthz_server.core.permissions import PermissionAnswer, PermissionQuery
from extauthz_server.core.secret import Secret
from extauthz_server.core.tokens import token_digest
from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.metadata.authorization_services import (
    AuthorizationServicesSettings,
    DecisionCachePolicy,
    PermissionMode,
    UmaDecisions,
)
from extauthz_server.metadata.circuit_breaker import BreakerSettings
from extauthz_server.metadata.uma_grant import UMA_GRANT
from tests.integration.conftest import Launch, RunningAuthz
from tests.support.check_requests import call_check, check_request
from tests.support.keycloak import (
    AUTHZ_EXT_AUTHZ_SECRET,
    AUTHZ_PASSWORD,
    AUTHZ_REALM,
    EXT_AUTHZ_CLIENT_ID,
    EXT_AUTHZ_SECRET,
    WEB_APP_CLIENT_ID,
    Keycloak,
)
from tests.support.keycloak_standin import in_two_chunks
from tests.support.net import TcpForwarder, serve_on_loopback
from tests.support.redis_server import RedisServer

GRPC_OK, GRPC_PERMISSION_DENIED, GRPC_UNAVAILABLE, GRPC_UNAUTHENTICATED = 0, 7, 14, 16
EUROPE_READ = PermissionQuery("region-europe", "read")
EUROPE_WRITE = PermissionQuery("region-europe", "write")
ASIA_READ = PermissionQuery("region-asia", "read")
BOB = Identity("u-bob", "bob", None, "web-app", frozenset(), frozenset(), None)


@dataclass
class UmaStandIn:
    """A token endpoint that records each UMA request and grants region-europe#read."""

    port: int = 0
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    # Answer 500 to everything: Keycloak failing.
    failing: bool = False

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/facts"

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            }
        )

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.forms.append(parse_qs(await request.text()))
        self.authorizations.append(request.headers.get("Authorization"))
        if self.failing:
            return web.Response(status=500)
        await asyncio.sleep(0.05)  # long enough for concurrent askers to meet in flight
        if self.forms[-1].get("response_mode") == ["permissions"]:
            return await self.permissions(request)
        if self.forms[-1].get("permission") == ["region-europe#read"]:
            return web.json_response({"result": True})
        return web.json_response({"error": "access_denied"}, status=403)

    async def permissions(self, request: web.Request) -> web.StreamResponse:
        """region-europe#read and one hundred more resources, sent in two chunks."""
        granted = [{"scopes": ["read"], "rsid": "id-eu", "rsname": "region-europe"}]
        granted += [{"scopes": ["read"], "rsid": f"id-{n}", "rsname": f"r-{n}"} for n in range(100)]
        return await in_two_chunks(request, json.dumps(granted).encode())


@pytest.fixture
async def uma() -> AsyncIterator[UmaStandIn]:
    standin = UmaStandIn()
    app = web.Application()
    app.router.add_get("/realms/facts/.well-known/openid-configuration", standin.discovery)
    app.router.add_post("/realms/facts/protocol/openid-connect/token", standin.token)
    runner, standin.port = await serve_on_loopback(app)
    yield standin
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decisions(
    session: aiohttp.ClientSession,
    uma: UmaStandIn,
    mode: PermissionMode = PermissionMode.DECISION,
    stale_if_error_s: float = 0.0,
    monotonic: Clock | None = None,
) -> UmaDecisions:
    return UmaDecisions(
        session,
        EndpointSource(session, uma.issuer, None, None),
        ClientCredentials("ext-authz", Secret("s3cret"), ClientAuthMethod.CLIENT_SECRET_BASIC),
        AuthorizationServicesSettings(audience="forms-api", mode=mode, timeout_s=2.0),
        DecisionCachePolicy(
            ttl_s=60, denied_ttl_s=10, max_entries=100, stale_if_error_s=stale_if_error_s
        ),
        monotonic=monotonic or time.monotonic,
    )


async def test_each_call_asks_one_pair_for_the_users_token_with_our_credentials(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    source = decisions(session, uma)

    answer = await source.decide("user-token", BOB, EUROPE_READ, 2.0)

    assert answer is PermissionAnswer.GRANTED
    [form] = uma.forms
    assert form == {
        "grant_type": [UMA_GRANT],
        "audience": ["forms-api"],
        "permission": ["region-europe#read"],
        "response_mode": ["decision"],
        "subject_token": ["user-token"],
    }
    expected = "Basic " + base64.b64encode(b"ext-authz:s3cret").decode()
    assert uma.authorizations == [expected]


async def test_one_token_resource_and_scope_costs_one_call_however_many_ask(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    source = decisions(session, uma)

    together = await asyncio.gather(*(source.decide("t", BOB, EUROPE_READ, 2.0) for _ in range(10)))
    later = [await source.decide("t", BOB, EUROPE_READ, 2.0) for _ in range(90)]
    other_scope = await source.decide("t", BOB, EUROPE_WRITE, 2.0)

    assert set(together + later) == {PermissionAnswer.GRANTED}
    assert other_scope is PermissionAnswer.DENIED
    assert len(uma.forms) == 2
    assert (source.calls, source.cache_hits) == (2, 90)


async def test_after_repeated_failures_checks_fail_at_once_until_one_call_probes(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    clock = Clock()
    source = UmaDecisions(
        session,
        EndpointSource(session, uma.issuer, None, None),
        ClientCredentials("ext-authz", Secret("s3cret"), ClientAuthMethod.CLIENT_SECRET_BASIC),
        AuthorizationServicesSettings(
            "forms-api", timeout_s=2.0, circuit_breaker=BreakerSettings(2, open_s=5.0)
        ),
        DecisionCachePolicy(ttl_s=60, denied_ttl_s=10, max_entries=100),
        monotonic=clock,
    )
    uma.failing = True

    for token in ("t1", "t2", "t3", "t4"):
        with pytest.raises(ProviderUnavailable):
            await source.decide(token, BOB, EUROPE_READ, 2.0)
    asked_while_open = len(uma.forms)
    uma.failing = False
    clock.now += 5.1
    probe = await source.decide("t5", BOB, EUROPE_READ, 2.0)
    after = await source.decide("t6", BOB, EUROPE_READ, 2.0)

    assert asked_while_open == 2  # two failures opened it; two checks failed at once
    assert (probe, after) == (PermissionAnswer.GRANTED, PermissionAnswer.GRANTED)
    assert source.outcomes["short_circuited"] == 2
    assert len(uma.forms) == 4


async def test_by_uri_asks_keycloak_to_match_the_path_against_resource_uris(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    source = decisions(session, uma)

    await source.decide("t", BOB, PermissionQuery("/api/regions/europe/x", "read", True), 2.0)

    [form] = uma.forms
    assert form["permission"] == ["/api/regions/europe/x#read"]
    assert form["permission_resource_format"] == ["uri"]
    assert form["permission_resource_matching_uri"] == ["true"]
    assert form["subject_token"] == ["t"]


async def test_permissions_mode_asks_once_per_token_and_reads_an_answer_sent_in_chunks(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    source = decisions(session, uma, PermissionMode.PERMISSIONS)

    answers = [
        await source.decide("t", BOB, PermissionQuery(resource, scope), 2.0)
        for resource, scope in [
            ("region-europe", "read"),
            ("region-europe", "write"),
            ("region-asia", "read"),
            ("r-99", "read"),
        ]
    ]

    assert answers == [
        PermissionAnswer.GRANTED,
        PermissionAnswer.DENIED,
        PermissionAnswer.DENIED,
        PermissionAnswer.GRANTED,
    ]
    [form] = uma.forms
    assert "permission" not in form
    assert (form["response_mode"], form["subject_token"]) == (["permissions"], ["t"])


async def test_a_kept_answer_stands_in_while_keycloak_fails_but_not_past_the_stale_window(
    session: aiohttp.ClientSession, uma: UmaStandIn
) -> None:
    clock = Clock()
    source = decisions(session, uma, stale_if_error_s=30, monotonic=clock)
    assert await source.decide("t", BOB, EUROPE_READ, 2.0) is PermissionAnswer.GRANTED
    uma.failing = True

    clock.now += 60 + 29  # past the answer's 60 s, within 30 s more
    stale = await source.decide("t", BOB, EUROPE_READ, 2.0)
    clock.now += 2
    with pytest.raises(ProviderUnavailable):
        await source.decide("t", BOB, EUROPE_READ, 2.0)
    with pytest.raises(ProviderUnavailable):
        await source.decide("t", BOB, ASIA_READ, 2.0)

    assert stale is PermissionAnswer.GRANTED
    assert source.stale_served == 1
    assert len(uma.forms) == 4  # the first answer, then each later check asked again


def shared_decisions(
    session: aiohttp.ClientSession, uma: UmaStandIn, redis: RedisCache
) -> UmaDecisions:
    return UmaDecisions(
        session,
        EndpointSource(session, uma.issuer, None, None),
        ClientCredentials("ext-authz", Secret("s3cret"), ClientAuthMethod.CLIENT_SECRET_BASIC),
        AuthorizationServicesSettings(audience="forms-api", timeout_s=2.0),
        DecisionCachePolicy(ttl_s=60, denied_ttl_s=10, max_entries=100),
        shared=redis,
    )


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = connect(redis_server.url, cluster=False, timeout_s=1.0, max_connections=8)
    yield client
    await client.aclose()


def replica_cache(client: Any, key: bytes = b"k" * 32) -> RedisCache:
    return RedisCache(client, "extauthz", 1.0, horizon_s=120, seal_key=key)


async def test_a_decision_one_replica_learnt_is_read_by_another_from_redis(
    session: aiohttp.ClientSession, uma: UmaStandIn, redis_client: Any
) -> None:
    first_cache, second_cache = replica_cache(redis_client), replica_cache(redis_client)
    first = shared_decisions(session, uma, first_cache)
    second = shared_decisions(session, uma, second_cache)

    assert await first.decide("t", BOB, EUROPE_READ, 2.0) is PermissionAnswer.GRANTED
    assert await first.decide("t", BOB, ASIA_READ, 2.0) is PermissionAnswer.DENIED
    await first_cache.settle()
    granted = await second.decide("t", BOB, EUROPE_READ, 2.0)
    denied = await second.decide("t", BOB, ASIA_READ, 2.0)

    assert (granted, denied) == (PermissionAnswer.GRANTED, PermissionAnswer.DENIED)
    assert (first.calls, second.calls, second.shared_hits) == (2, 0, 2)


async def test_a_decision_written_to_redis_without_the_key_is_not_believed(
    session: aiohttp.ClientSession, uma: UmaStandIn, redis_client: Any
) -> None:
    forger = replica_cache(redis_client, key=b"f" * 32)
    forger.put_decision_later(token_digest("t"), "forms-api name:region-asia#read", "granted", 60)
    await forger.settle()
    replica = shared_decisions(session, uma, replica_cache(redis_client))

    answer = await replica.decide("t", BOB, ASIA_READ, 2.0)

    assert answer is PermissionAnswer.DENIED
    assert (replica.calls, replica.shared_hits) == (1, 0)


# -- the real Keycloak ---------------------------------------------------------------------

ROUTES = """\
routes:
  - name: region-forms
    path_template: "/api/regions/{region}/forms/{rest=**}"
    permission:
      resource: "region-{region}"
      scope: {GET: read, POST: write}
"""


BY_URI_ROUTES = """\
routes:
  - name: regions
    path_prefix: /api/regions/
    permission: {by_uri: true, scope: {GET: read, POST: write}}
"""


def facts_config(
    keycloak: Keycloak, *, issuer: str | None = None, services: str = "", routes: str = ROUTES
) -> str:
    return f"""\
server: {{grpc_listen: "127.0.0.1:0", http_listen: "127.0.0.1:0"}}
provider:
  issuer: "{issuer or keycloak.issuer_of(AUTHZ_REALM)}"
  client_id: {EXT_AUTHZ_CLIENT_ID}
  client_secret: "{AUTHZ_EXT_AUTHZ_SECRET}"
  timeout_ms: 2000
  authorization_services: {{audience: forms-api, timeout_ms: 2000{services}}}
{routes}"""


CheckCode = Callable[[str, str, str | None], Awaitable[int]]


def check_codes(authz: RunningAuthz) -> CheckCode:
    async def code(method: str, path: str, token: str | None) -> int:
        request = check_request(path, token=token, method=method)
        return (await call_check(authz.channel, request, timeout_s=10.0)).status.code

    return code


def keycloak_calls(authz: RunningAuthz) -> int:
    [provider] = authz.server.providers
    assert provider.decisions is not None
    return provider.decisions.calls


def token_of(keycloak: Keycloak, username: str) -> str:
    grant = keycloak.password_grant(username, password=AUTHZ_PASSWORD, realm=AUTHZ_REALM)
    return str(grant["access_token"])


@pytest.mark.keycloak
async def test_keycloak_decides_each_region_and_method(keycloak: Keycloak, launch: Launch) -> None:
    authz = await launch(parse_config(facts_config(keycloak), {}), None)
    bob, alice, dave = (token_of(keycloak, name) for name in ("bob", "alice", "dave"))

    async def code(method: str, path: str, token: str | None) -> int:
        request = check_request(path, token=token, method=method)
        return (await call_check(authz.channel, request, timeout_s=10.0)).status.code

    # bob is in /regions/europe/managers: Europe's forms to read, nothing more.
    assert await code("GET", "/api/regions/europe/forms/1", bob) == GRPC_OK
    assert await code("POST", "/api/regions/europe/forms/1", bob) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/asia/forms/1", bob) == GRPC_PERMISSION_DENIED
    # alice is an admin (a role policy with fetchRoles, so lightweight tokens work).
    assert await code("POST", "/api/regions/europe/forms/1", alice) == GRPC_OK
    assert await code("GET", "/api/regions/asia/forms/1", alice) == GRPC_OK
    assert await code("POST", "/api/regions/asia/forms/1", alice) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/europe/forms/1", dave) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/europe/forms/1", None) == GRPC_UNAUTHENTICATED
    # A region Keycloak does not know is our route table's mistake: denied, never allowed.
    assert await code("GET", "/api/regions/mars/forms/1", bob) == GRPC_PERMISSION_DENIED

    [provider] = authz.server.providers
    assert provider.decisions is not None
    calls = provider.decisions.calls
    for _ in range(100):
        assert await code("GET", "/api/regions/europe/forms/2", bob) == GRPC_OK
    assert provider.decisions.calls == calls

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{authz.http_base}/metrics") as response,
    ):
        metrics = await response.text()
    counted = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("extauthz_keycloak_permission_checks_total{")
    }
    # One call per pair: three grants, four denials, the unknown region; the rest cached.
    assert counted["cache_hit"] >= 100
    assert (counted["granted"], counted["denied"], counted["misconfigured"]) == (3, 4, 1)


@pytest.mark.keycloak
async def test_in_permissions_mode_one_call_per_token_answers_every_pair(
    keycloak: Keycloak, launch: Launch
) -> None:
    config = facts_config(keycloak, services=", mode: permissions")
    authz = await launch(parse_config(config, {}), None)
    code = check_codes(authz)
    bob, alice, dave = (token_of(keycloak, name) for name in ("bob", "alice", "dave"))

    assert await code("GET", "/api/regions/europe/forms/1", bob) == GRPC_OK
    assert await code("POST", "/api/regions/europe/forms/1", bob) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/asia/forms/1", bob) == GRPC_PERMISSION_DENIED
    assert keycloak_calls(authz) == 1
    assert await code("POST", "/api/regions/europe/forms/1", alice) == GRPC_OK
    assert await code("GET", "/api/regions/asia/forms/1", alice) == GRPC_OK
    assert await code("POST", "/api/regions/asia/forms/1", alice) == GRPC_PERMISSION_DENIED
    # Keycloak lists nothing for dave (a 403, not []): denied, and asked once too.
    assert await code("GET", "/api/regions/europe/forms/1", dave) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/asia/forms/1", dave) == GRPC_PERMISSION_DENIED
    assert keycloak_calls(authz) == 3


@pytest.mark.keycloak
async def test_by_uri_keycloak_matches_the_request_path_against_its_resources(
    keycloak: Keycloak, launch: Launch
) -> None:
    authz = await launch(parse_config(facts_config(keycloak, routes=BY_URI_ROUTES), {}), None)
    code = check_codes(authz)
    bob, alice = token_of(keycloak, "bob"), token_of(keycloak, "alice")

    # region-europe declares /api/regions/europe/*, which deeper paths match too.
    assert await code("GET", "/api/regions/europe/forms/1", bob) == GRPC_OK
    assert await code("POST", "/api/regions/europe/forms/1", bob) == GRPC_PERMISSION_DENIED
    assert await code("GET", "/api/regions/asia/forms/1", bob) == GRPC_PERMISSION_DENIED
    assert await code("POST", "/api/regions/europe/forms/1", alice) == GRPC_OK
    # A path no resource declares: Keycloak's invalid_resource, denied and never allowed.
    assert await code("GET", "/api/regions/mars/forms/1", alice) == GRPC_PERMISSION_DENIED


@pytest.mark.keycloak
async def test_with_keycloak_stopped_a_decision_not_kept_is_503_never_an_allow(
    keycloak: Keycloak, launch: Launch
) -> None:
    # Keycloak is shared by the session: what stops is the only way our server reaches it.
    door = TcpForwarder(keycloak.http_port)
    await door.start()
    issuer = f"http://127.0.0.1:{door.port}/realms/{AUTHZ_REALM}"
    authz = await launch(parse_config(facts_config(keycloak, issuer=issuer), {}), None)
    code = check_codes(authz)
    bob, alice = await token_through(issuer, "bob"), await token_through(issuer, "alice")
    assert await code("GET", "/api/regions/europe/forms/1", bob) == GRPC_OK

    await door.close()

    # Kept: bob's identity and his europe#read decision.
    assert await code("GET", "/api/regions/europe/forms/2", bob) == GRPC_OK
    assert await code("POST", "/api/regions/europe/forms/1", bob) == GRPC_UNAVAILABLE
    assert await code("GET", "/api/regions/europe/forms/1", alice) == GRPC_UNAVAILABLE


async def token_through(issuer: str, username: str) -> str:
    form = {
        "grant_type": "password",
        "client_id": WEB_APP_CLIENT_ID,
        "username": username,
        "password": AUTHZ_PASSWORD,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{issuer}/protocol/openid-connect/token", data=form) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


EXAMPLE_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "examples" / "config.yaml"


@pytest.mark.keycloak
async def test_the_example_configuration_lets_the_demo_realm_decide_region_reports(
    keycloak: Keycloak, launch: Launch
) -> None:
    text = (
        EXAMPLE_CONFIG.read_text()
        .replace("http://127.0.0.1:8080/realms/demo", keycloak.issuer)
        .replace("0.0.0.0:9191", "127.0.0.1:0")
        .replace("127.0.0.1:8181", "127.0.0.1:0")
        .replace("0.0.0.0:8282", "127.0.0.1:0")
        .replace("timeout_ms: 150", "timeout_ms: 2000")
    )
    config = parse_config(text, {"EXTAUTHZ_CLIENT_SECRET": EXT_AUTHZ_SECRET})
    authz = await launch(config, None)
    code = check_codes(authz)
    maria, alice, bob = (
        keycloak.password_grant(name)["access_token"] for name in ("maria", "alice", "bob")
    )

    # maria is in /regions/europe/managers: Europe's reports to read and write, not Asia's.
    assert await code("POST", "/api/regions/Europe/reports/q3", maria) == GRPC_OK
    assert await code("GET", "/api/regions/europe/reports/q3", maria) == GRPC_OK
    assert await code("GET", "/api/regions/asia/reports/q3", maria) == GRPC_PERMISSION_DENIED
    assert await code("DELETE", "/api/regions/asia/reports/q3", alice) == GRPC_OK
    assert await code("GET", "/api/regions/europe/reports/q3", bob) == GRPC_PERMISSION_DENIED


@pytest.mark.keycloak
def test_check_with_a_real_token_shows_keycloaks_answer(
    keycloak: Keycloak, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(facts_config(keycloak))
    bob = token_of(keycloak, "bob")

    def check(method: str) -> str:
        command = ["check", "--config", str(config), "--method", method, "--token", bob]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "extauthz_server",
                *command,
                "--path",
                "/api/regions/europe/forms/1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout

    assert "keycloak asked:  region-europe#read  →  granted" in check("GET")
    assert "keycloak asked:  region-europe#write  →  denied" in check("POST")
