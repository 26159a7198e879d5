"""Traefik's ForwardAuth, played by a client that does what Traefik does. It complements
tests/e2e/test_behind_forward_auth_proxies.py, which runs the real Traefik on the shipped
deploy/traefik/dynamic.yml: this one states the contract rule by rule, against the Keycloak
stand-in, without Keycloak or a Traefik build. Read from Traefik's
`pkg/middlewares/auth/forward.go`:

- the auth request is a GET to `address`, carrying the client's headers (hop-by-hop ones
  removed) with X-Forwarded-For, -Method, -Proto, -Host and -Uri set from the original
  request (with `trustForwardHeader: false`, the default, whatever the client sent for them
  is overwritten);
- a 2xx answer lets the request on: each `authResponseHeaders` name is deleted from it, then
  copied from the answer when the answer has it;
- any other answer goes back to the client: its status, headers (hop-by-hop removed), body;
- no answer at all is a 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import pytest

from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.keycloak_standin import KeycloakStandIn, active_document

AUTH_RESPONSE_HEADERS = ("X-Auth-Subject", "X-Auth-Username", "X-Auth-Email", "X-Auth-Roles")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Outcome:
    """What the client gets, and (when let on) what the upstream would receive."""

    status: int
    client_headers: Mapping[str, str]
    body: str
    upstream_headers: Mapping[str, str] | None


async def traefik_forward_auth(
    session: aiohttp.ClientSession,
    address: str,
    method: str,
    host: str,
    request_uri: str,
    headers: Mapping[str, str],
    client_ip: str = "203.0.113.5",
) -> Outcome:
    forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
    for name in list(forwarded):
        if name.lower().startswith("x-forwarded-"):
            del forwarded[name]  # trustForwardHeader: false
    forwarded |= {
        "X-Forwarded-For": client_ip,
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": request_uri,
    }
    try:
        async with session.get(address, headers=forwarded) as answer:
            body = await answer.text()
            answer_headers = {k.lower(): v for k, v in answer.headers.items()}
            status = answer.status
    except aiohttp.ClientError:
        return Outcome(500, {}, "", None)
    if not 200 <= status < 300:
        client = {k: v for k, v in answer_headers.items() if k not in HOP_BY_HOP}
        return Outcome(status, client, body, None)
    upstream = {k.lower(): v for k, v in headers.items()}
    for name in AUTH_RESPONSE_HEADERS:
        upstream.pop(name.lower(), None)
        if name.lower() in answer_headers:
            upstream[name.lower()] = answer_headers[name.lower()]
    return Outcome(status, {}, body, upstream)


@pytest.fixture
async def address(start_authz: StartAuthz, standin: KeycloakStandIn) -> str:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    authz: RunningAuthz = await start_authz(server={"http_authz_listen": "127.0.0.1:0"})
    return f"http://127.0.0.1:{authz.server.http_authz_port}/forward-auth"


BOB = {"Authorization": "Bearer bob-token"}


async def test_an_allow_reaches_the_upstream_with_our_headers_not_the_clients(
    session: aiohttp.ClientSession, address: str
) -> None:
    smuggled = {**BOB, "X-Auth-Roles": "admin", "X-Auth-Subject": "root"}

    outcome = await traefik_forward_auth(
        session, address, "POST", "app.example", "/api/forms/1?x=2", smuggled
    )

    assert outcome.status == 200
    assert outcome.upstream_headers is not None
    assert outcome.upstream_headers["x-auth-roles"] == "creator"
    assert outcome.upstream_headers["x-auth-subject"] == "sub-bob"


async def test_a_deny_reaches_the_client_with_status_challenge_and_body(
    session: aiohttp.ClientSession, address: str
) -> None:
    no_token = await traefik_forward_auth(session, address, "GET", "app.example", "/api/forms", {})
    no_role = await traefik_forward_auth(session, address, "GET", "app.example", "/admin", BOB)

    assert no_token.status == 401
    assert no_token.client_headers["www-authenticate"] == 'Bearer realm="demo"'
    assert json.loads(no_token.body)["error"] == "unauthorized"
    assert (no_role.status, no_role.upstream_headers) == (403, None)


@pytest.mark.parametrize(
    "spoofed",
    [
        {"X-Forwarded-Uri": "/healthz", "X-Forwarded-Method": "GET"},
        {"X-Original-URI": "/healthz", "X-Original-Method": "GET"},
    ],
    ids=["x-forwarded-overwritten", "x-original-passed-on"],
)
async def test_a_client_cannot_name_another_request_to_be_judged(
    session: aiohttp.ClientSession, address: str, spoofed: dict[str, str]
) -> None:
    outcome = await traefik_forward_auth(
        session, address, "DELETE", "app.example", "/admin/users/7", {**BOB, **spoofed}
    )

    assert outcome.status in (400, 403)
    assert outcome.upstream_headers is None


async def test_with_the_provider_down_the_client_gets_503(
    session: aiohttp.ClientSession, address: str, standin: KeycloakStandIn
) -> None:
    await standin.stop()

    outcome = await traefik_forward_auth(
        session, address, "GET", "app.example", "/api/forms", {"Authorization": "Bearer new"}
    )

    assert outcome.status == 503
    assert json.loads(outcome.body)["error"] == "temporarily_unavailable"
