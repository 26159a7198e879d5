"""Keycloak Authorization Services deciding routes, as deployed: real Envoy → our server →
real Keycloak, realm `facts` (keycloak/facts-realm.json): bob manages Europe (a group
policy), alice is an admin (a role policy), dave has nothing."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import E2E_CACHE_TTL_S, http_get, warm_up
from tests.support.authz_process import AuthzProcess
from tests.support.envoy import EnvoyProcess
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak import (
    AUTHZ_EXT_AUTHZ_SECRET,
    AUTHZ_PASSWORD,
    AUTHZ_REALM,
    EXT_AUTHZ_CLIENT_ID,
    Keycloak,
)

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]


@pytest.fixture(scope="module")
def envoy(
    keycloak: Keycloak, envoy_factory: EnvoyFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    warm_up(keycloak)
    text = f"""\
server: {{grpc_listen: "127.0.0.1:0", http_listen: "127.0.0.1:0"}}
provider:
  issuer: "{keycloak.issuer_of(AUTHZ_REALM)}"
  client_id: {EXT_AUTHZ_CLIENT_ID}
  client_secret: "{AUTHZ_EXT_AUTHZ_SECRET}"
  timeout_ms: 1000
  authorization_services: {{audience: forms-api, timeout_ms: 1000}}
cache: {{ttl_seconds: {E2E_CACHE_TTL_S}}}
routes:
  - name: region-forms
    path_template: "/api/regions/{{region}}/forms/{{rest=**}}"
    permission: {{resource: "region-{{region}}", scope: {{GET: read, POST: write}}}}
"""
    process = AuthzProcess.start(text, tmp_path_factory.mktemp("authz-services"))
    # What is tested is the decisions, not their speed: a loaded host gets room for both calls.
    envoy = envoy_factory(process.grpc_port, timeout_s=2.5)
    _warm_up_policy_evaluation(envoy, keycloak)
    yield envoy
    process.stop()


def _warm_up_policy_evaluation(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    """A fresh Keycloak evaluates its first UMA decisions slower than Envoy's 250 ms allow
    (503); a deployed one is warm, so the scenarios run against a warm one. A fresh token
    each time: every Check introspects and asks Keycloak anew."""
    for _ in range(20):
        status(envoy, "GET", "/api/regions/europe/forms/1", token_of(keycloak, "alice"))


def token_of(keycloak: Keycloak, username: str) -> str:
    grant = keycloak.password_grant(username, password=AUTHZ_PASSWORD, realm=AUTHZ_REALM)
    return str(grant["access_token"])


def status(envoy: EnvoyProcess, method: str, path: str, token: str | None) -> int:
    if method == "GET":
        return http_get(envoy, path, token=token).status
    request = urllib.request.Request(envoy.url(path), data=b"{}", method=method)  # noqa: S310
    request.add_header("Host", "app.example")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_keycloak_decides_each_user_region_and_method_through_envoy(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    bob, alice, dave = (token_of(keycloak, name) for name in ("bob", "alice", "dave"))
    europe, asia = "/api/regions/europe/forms/1", "/api/regions/asia/forms/1"

    assert status(envoy, "GET", europe, bob) == 200
    assert status(envoy, "POST", europe, bob) == 403
    assert status(envoy, "GET", asia, bob) == 403
    assert status(envoy, "POST", europe, alice) == 200
    assert status(envoy, "GET", europe, dave) == 403
    assert status(envoy, "GET", europe, None) == 401


def test_after_an_admin_logout_bob_is_refused_never_allowed(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    bob = token_of(keycloak, "bob")
    europe = "/api/regions/europe/forms/1"
    assert status(envoy, "GET", europe, bob) == 200

    keycloak.logout_user("bob", realm=AUTHZ_REALM)

    # Cached answers may allow until the identity cache expires; past it, never 200.
    deadline = time.monotonic() + E2E_CACHE_TTL_S + 10
    while (code := status(envoy, "GET", europe, bob)) == 200:
        assert time.monotonic() < deadline, "still allowed past the cache TTL"
        time.sleep(0.2)
    assert code in (401, 403)
