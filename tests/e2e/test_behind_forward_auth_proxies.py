"""nginx (`auth_request`, deploy/nginx/extauthz.conf) and Caddy (`forward_auth`,
deploy/caddy/Caddyfile), Debian's packages, and Traefik (ForwardAuth,
deploy/traefik/dynamic.yml), built from its Go module, running the shipped files → our HTTP
authorization listener → real Keycloak; the upstream echoes what it received. The
counterparts of the Envoy scenarios, per proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import access_token, http_get, without_provider
from tests.support import traefik_binary
from tests.support.authz_process import AuthzProcess
from tests.support.caddy import start_caddy
from tests.support.dpop import DpopKey
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.keycloak import Keycloak
from tests.support.net import free_port
from tests.support.nginx import start_nginx
from tests.support.proxy_process import ProxyProcess
from tests.support.traefik import start_traefik

pytestmark = [pytest.mark.keycloak, pytest.mark.proxies]


RunningProxy = ProxyProcess
StartProxy = Callable[..., ProxyProcess]
STARTERS: dict[str, StartProxy] = {
    "nginx": start_nginx,
    "caddy": start_caddy,
    "traefik": start_traefik,
}
# With our server unreachable nginx's config answers 503; Caddy's forward_auth gives its own
# 502, Traefik's ForwardAuth its own 500. Either way nothing reaches the upstream.
STATUS_WITHOUT_OUR_SERVER = {"nginx": 503, "caddy": 502, "traefik": 500}


def _proxy_params() -> list[object]:
    # .ci/run builds Traefik before the tests. Where it has not been built yet, the first
    # Traefik test builds it, which from empty Go caches takes longer than the suite's
    # timeout allows a test: only then do the Traefik tests get the build's bound on top.
    build_first = traefik_binary.cached_binary() is None
    slow = pytest.mark.timeout(traefik_binary.BUILD_TIMEOUT_S + 300)
    return [
        pytest.param(name, marks=slow if build_first and name == "traefik" else ())
        for name in sorted(STARTERS)
    ]


@pytest.fixture(scope="module", params=_proxy_params())
def proxy_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(name: str, extauthz_port: int, upstream_port: int, workdir: Path) -> RunningProxy:
    return STARTERS[name](extauthz_port=extauthz_port, upstream_port=upstream_port, workdir=workdir)


@pytest.fixture(scope="module")
def proxy(
    proxy_name: str,
    authz_process: AuthzProcess,
    echo_upstream: BackgroundEchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningProxy]:
    process = start(
        proxy_name,
        authz_process.http_authz_port,
        echo_upstream.port,
        tmp_path_factory.mktemp(proxy_name),
    )
    yield process
    process.stop()


def test_a_manager_reaches_forms_as_creator(proxy: RunningProxy, keycloak: Keycloak) -> None:
    reply = http_get(proxy, "/api/forms?draft=1", token=access_token(keycloak, "bob"))

    assert reply.status == 200
    seen = reply.upstream_headers
    assert (seen["x-auth-roles"], seen["x-auth-username"]) == ("creator", "bob")
    assert reply.json()["path"] == "/api/forms?draft=1"


def test_a_manager_is_forbidden_from_admin(proxy: RunningProxy, keycloak: Keycloak) -> None:
    assert http_get(proxy, "/admin/users", token=access_token(keycloak, "bob")).status == 403


def test_no_token_gets_401_and_the_challenge_reaches_the_client(proxy: RunningProxy) -> None:
    reply = http_get(proxy, "/api/forms")

    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="demo"'


def test_garbage_token_gets_401_invalid_token(proxy: RunningProxy) -> None:
    reply = http_get(proxy, "/api/forms", token="not-a-real-token")

    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_client_sent_identity_headers_never_reach_the_upstream(
    proxy: RunningProxy, keycloak: Keycloak
) -> None:
    smuggled = {"X-Auth-Roles": "admin", "X-Auth-Subject": "root", "X-Auth-Client": "admin-cli"}

    known = http_get(proxy, "/api/forms", token=access_token(keycloak, "bob"), headers=smuggled)
    anonymous = http_get(proxy, "/healthz", headers=smuggled)

    raw = known.json()["raw_headers"]
    assert isinstance(raw, list)
    assert [v for n, v in raw if n.lower() == "x-auth-roles"] == ["creator"]
    assert [v for n, v in raw if n.lower() == "x-auth-subject"] != ["root"]
    assert anonymous.status == 200
    left = {n: v for n, v in anonymous.upstream_headers.items() if n.startswith("x-auth-")}
    # No identity on a public route without a token: nothing the client sent, and no value.
    assert all(value == "" for value in left.values()), left


@pytest.mark.parametrize(
    "spoofed",
    [
        {"X-Forwarded-Uri": "/healthz", "X-Forwarded-Method": "GET"},
        {"X-Original-URI": "/healthz", "X-Original-Method": "GET"},
        {"X-Forwarded-Uri": "/healthz", "X-Original-URI": "/healthz"},
    ],
    ids=["x-forwarded", "x-original", "both"],
)
def test_a_client_cannot_name_another_request_to_be_judged(
    proxy: RunningProxy, keycloak: Keycloak, spoofed: dict[str, str]
) -> None:
    # The proxy passes the client's headers on to us: a client's claim that its request
    # is for the public /healthz must not open /admin.
    token = access_token(keycloak, "bob")

    reply = http_get(proxy, "/admin/users", token=token, headers=spoofed)

    assert reply.status in (400, 403)
    assert b"raw_headers" not in reply.body


def test_dot_segments_cannot_escape_to_a_public_prefix(
    proxy: RunningProxy, keycloak: Keycloak
) -> None:
    assert http_get(proxy, "/public/../admin/users").status == 401
    token = access_token(keycloak, "bob")
    assert http_get(proxy, "/public/%2e%2e/admin/users", token=token).status in (400, 403)


def test_a_path_that_cannot_be_read_is_400(proxy: RunningProxy, keycloak: Keycloak) -> None:
    token = access_token(keycloak, "bob")

    assert http_get(proxy, "/admin%3Fx=/api/forms", token=token).status == 400


def test_keycloak_down_gives_503_never_200(
    proxy_name: str,
    keycloak: Keycloak,
    echo_upstream: BackgroundEchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    authz = without_provider(tmp_path_factory)
    process = start(
        proxy_name, authz.http_authz_port, echo_upstream.port, tmp_path_factory.mktemp("dead")
    )
    try:
        reply = http_get(process, "/api/forms", token=access_token(keycloak, "alice"))
    finally:
        process.stop()
        authz.stop()

    assert reply.status == 503


def test_our_server_down_fails_closed_and_nothing_reaches_the_upstream(
    proxy_name: str, echo_upstream: BackgroundEchoUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    process = start(
        proxy_name, free_port(), echo_upstream.port, tmp_path_factory.mktemp("no-authz")
    )
    try:
        reply = http_get(process, "/api/forms", token="any")
    finally:
        process.stop()

    assert reply.status == STATUS_WITHOUT_OUR_SERVER[proxy_name]
    assert b"raw_headers" not in reply.body


def test_a_dpop_bound_token_passes_with_a_fresh_proof_and_not_with_a_replay(
    proxy: RunningProxy, keycloak: Keycloak
) -> None:
    key = DpopKey()
    token = keycloak.dpop_password_grant("bob", lambda m, u: key.proof(m, u))["access_token"]
    # The proxy tells us the scheme and host the client addressed (X-Forwarded-Proto, -Host).
    proof = key.proof("GET", "http://app.example/api/forms/9", token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}

    reply = http_get(proxy, "/api/forms/9", headers=headers)
    assert reply.status == 200, reply.body
    assert reply.upstream_headers["x-auth-client"] == "dpop-app"

    replayed = http_get(proxy, "/api/forms/9", headers=headers)
    assert replayed.status == 401
    assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]
