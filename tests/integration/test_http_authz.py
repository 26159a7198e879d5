"""The HTTP authorization listener, asked as the proxies ask it (Envoy's `http_service` under
`/envoy`, forward-auth under `/forward-auth`), against the Keycloak stand-in: the same
decisions, headers and bodies as the gRPC edge."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest

from tests.hardening.adapter import IDENTITY_HEADERS
from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import call_check, check_request, denied_headers
from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn, active_document
from tests.support.net import free_port

HTTP_AUTHZ = {"http_authz_listen": "127.0.0.1:0"}
BOB = {"authorization": "Bearer bob-token"}


@pytest.fixture
async def authz(start_authz: StartAuthz, standin: KeycloakStandIn) -> RunningAuthz:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    without_email = active_document("bob", ["manager"])
    del without_email["email"]
    standin.documents["bob-without-email"] = without_email
    return await start_authz(server=HTTP_AUTHZ)


def base(authz: RunningAuthz) -> str:
    return f"http://127.0.0.1:{authz.server.http_authz_port}"


async def ask(
    session: aiohttp.ClientSession,
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    async with session.request(method, url, headers=headers or {}) as response:
        return (
            response.status,
            {k.lower(): v for k, v in response.headers.items()},
            (await response.text()),
        )


async def test_envoy_mode_allows_with_the_identity_headers_and_names_the_rest_to_remove(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    status, headers, body = await ask(
        session,
        base(authz) + "/envoy/api/forms/7?draft=1",
        "POST",
        {"authorization": "Bearer bob-without-email"},
    )

    assert status == 200
    assert (headers["x-auth-roles"], headers["x-auth-username"]) == ("creator", "bob")
    to_remove = {h.strip() for h in headers["x-envoy-auth-headers-to-remove"].split(",")}
    # bob has no email: the client's copy of that header must go too.
    assert "x-auth-email" in to_remove
    assert body == ""


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/envoy/admin/users", BOB, 403),
        ("/envoy/api/forms", {}, 401),
        ("/envoy/api/forms", {"authorization": "Bearer unknown"}, 401),
        ("/envoy/api/forms/%2e%2e/%2e%2e/admin", BOB, 403),
        ("/envoy/admin%3Fx=/api/forms", BOB, 400),
    ],
    ids=["no-role", "no-token", "inactive-token", "encoded-dot-segments", "encoded-query"],
)
async def test_a_deny_is_the_grpc_edges_status_challenge_and_body(
    authz: RunningAuthz,
    session: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    original = path.removeprefix("/envoy")
    token = headers.get("authorization", "").removeprefix("Bearer ") or None
    grpc_answer = await call_check(authz.channel, check_request(original, token=token))

    got_status, got_headers, body = await ask(
        session, base(authz) + path, headers={**headers, "host": "app.example"}
    )

    assert got_status == status == grpc_answer.denied_response.status.code
    assert json.loads(body) == json.loads(grpc_answer.denied_response.body)
    expected = denied_headers(grpc_answer)
    assert got_headers.get("www-authenticate") == expected.get("www-authenticate")
    assert got_headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "original",
    [
        {"x-forwarded-method": "GET", "x-forwarded-host": "app.example", "x-forwarded-uri": "/"},
        {"x-original-method": "GET", "x-original-uri": "/", "host": "app.example"},
    ],
    ids=["traefik-caddy", "nginx"],
)
async def test_forward_auth_judges_the_request_the_proxy_names(
    authz: RunningAuthz, session: aiohttp.ClientSession, original: dict[str, str]
) -> None:
    def naming(method: str, uri: str) -> dict[str, str]:
        renamed = {**original, **BOB}
        for key in renamed:
            if key.endswith("-method"):
                renamed[key] = method
            elif key.endswith("-uri"):
                renamed[key] = uri
        return renamed

    allowed = await ask(session, base(authz) + "/forward-auth", headers=naming("GET", "/api/forms"))
    refused = await ask(session, base(authz) + "/forward-auth", headers=naming("GET", "/admin"))
    by_method = await ask(
        session, base(authz) + "/forward-auth", headers=naming("PATCH", "/admin/users")
    )

    assert (allowed[0], allowed[1]["x-auth-roles"]) == (200, "creator")
    assert refused[0] == 403
    assert by_method[0] == 403  # admin allows no PATCH
    assert "x-envoy-auth-headers-to-remove" not in allowed[1]


async def test_forward_auth_sends_every_identity_header_empty_when_it_has_no_value(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    # The proxy copies each header from the answer over the client's copy: one left out of
    # the answer would let the client's through (or, in Caddy 2.6, a placeholder's text).
    original = {"x-forwarded-method": "GET", "x-forwarded-uri": "/api/forms"}
    caller = {"authorization": "Bearer bob-without-email"}

    status, headers, _ = await ask(
        session, base(authz) + "/forward-auth", headers={**original, **caller}
    )
    public_status, public, _ = await ask(
        session, base(authz) + "/forward-auth", headers={**original, "x-forwarded-uri": "/healthz"}
    )

    assert (status, headers["x-auth-roles"], headers["x-auth-email"]) == (200, "creator", "")
    assert public_status == 200
    assert {name: public[name] for name in IDENTITY_HEADERS} == dict.fromkeys(IDENTITY_HEADERS, "")


@pytest.mark.parametrize(
    "headers",
    [
        BOB,
        {**BOB, "x-forwarded-method": "GET"},
        {**BOB, "x-original-uri": "/api/forms"},
        {**BOB, "x-forwarded-method": "GET", "x-forwarded-uri": "https://app.example/api/forms"},
    ],
    ids=["nothing", "no-uri", "no-method", "absolute-uri"],
)
async def test_forward_auth_that_names_no_original_request_is_400_never_judged_as_itself(
    authz: RunningAuthz, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, _, body = await ask(session, base(authz) + "/forward-auth", headers=headers)

    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"


async def test_other_paths_are_404_and_judge_nothing(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    for path in ("/api/forms", "/envoyx/api/forms", "/forward-auth/x"):
        status, _, body = await ask(session, base(authz) + path, headers=BOB)
        assert status == 404
        assert "/forward-auth" in json.loads(body)["error_description"]


async def test_with_the_provider_down_the_http_edge_answers_503(
    authz: RunningAuthz, session: aiohttp.ClientSession, standin: KeycloakStandIn
) -> None:
    await standin.stop()

    status, _, body = await ask(
        session, base(authz) + "/envoy/api/forms", headers={"authorization": "Bearer new-token"}
    )

    assert status == 503
    assert json.loads(body)["error"] == "temporarily_unavailable"


async def test_http_checks_are_counted_like_grpc_ones(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    await ask(session, base(authz) + "/envoy/api/forms", headers=BOB)
    await ask(session, base(authz) + "/envoy/admin", headers=BOB)

    async with session.get(authz.http_base + "/metrics") as response:
        metrics = await response.text()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("extauthz_checks_total{") and not line.endswith(" 0.0")
    ]
    assert any('outcome="allowed",reason="allowed",route="forms"' in line for line in counted)
    assert any(
        'outcome="denied",reason="insufficient_role",route="admin"' in line for line in counted
    )


async def test_a_request_asked_again_gets_the_same_answer_counted_as_an_l1_hit(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    url = base(authz) + "/envoy/api/forms/7"

    # Introspected, then an L1 hit kept for repeating, then repeated: alike to the client and
    # in the counters.
    answers = [await ask(session, url, headers=BOB) for _ in range(3)]
    metrics = await scrape(session, authz)

    assert answers[0][0] == 200
    assert answers[1] == answers[0]
    assert answers[2] == answers[0]
    assert metrics['extauthz_checks_total{outcome="allowed",reason="allowed",route="forms"}'] == 3
    assert metrics['extauthz_cache_lookups_total{level="l1",result="hit"}'] == 2


async def test_forward_auth_repeats_no_answer_for_another_original_request(
    authz: RunningAuthz, session: aiohttp.ClientSession
) -> None:
    url = base(authz) + "/forward-auth"
    forms = {**BOB, "x-forwarded-method": "GET", "x-forwarded-uri": "/api/forms"}
    for _ in range(2):  # kept the second time
        await ask(session, url, headers=forms)
    repeated = await ask(session, url, headers=forms)

    admin = await ask(session, url, headers={**forms, "x-forwarded-uri": "/admin"})
    disagreeing = await ask(session, url, headers={**forms, "x-original-uri": "/admin"})
    no_method = await ask(session, url, headers={**BOB, "x-forwarded-uri": "/api/forms"})

    assert (repeated[0], repeated[1]["x-auth-roles"]) == (200, "creator")
    assert (admin[0], disagreeing[0], no_method[0]) == (403, 400, 400)


async def scrape(session: aiohttp.ClientSession, authz: RunningAuthz) -> dict[str, float]:
    async with session.get(authz.http_base + "/metrics") as response:
        text = await response.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


async def test_the_listener_is_off_unless_configured(
    start_authz: StartAuthz,
) -> None:
    authz = await start_authz()

    assert authz.server.http_authz_port == 0


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_the_server_process_answers_over_http_on_either_event_loop(
    event_loop: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/realms/demo"
    text = seed_config_text(dead, server={**HTTP_AUTHZ, "event_loop": event_loop})
    process = AuthzProcess.start(text, tmp_path)
    connection = http.client.HTTPConnection("127.0.0.1", process.http_authz_port, timeout=10)
    try:
        connection.request("GET", "/envoy/api/forms")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
        process.stop()

    assert response.status == 401
    assert response.getheader("www-authenticate") == 'Bearer realm="demo"'
