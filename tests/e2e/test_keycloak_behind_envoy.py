"""The product as deployed: real Envoy → our server → real Keycloak; the upstream echoes headers.
Each scenario runs with Envoy asking over gRPC and over HTTP."""

from __future__ import annotations

import http.client
import time

import jwt
import pytest

from tests.e2e.conftest import E2E_CACHE_TTL_S, access_token, http_get
from tests.support.envoy import EnvoyProcess
from tests.support.keycloak import REPORTING_JOB_CLIENT_ID, REPORTING_JOB_SECRET, Keycloak

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]


# Every scenario twice: Envoy asking over gRPC (envoy/envoy.yaml) and over HTTP
# (envoy/envoy-http.yaml), the same server behind both.
@pytest.fixture(params=["grpc", "http"])
def envoy(
    request: pytest.FixtureRequest, envoy: EnvoyProcess, envoy_over_http: EnvoyProcess
) -> EnvoyProcess:
    return envoy if request.param == "grpc" else envoy_over_http


@pytest.fixture(params=["grpc", "http"])
def envoy_without_provider(
    request: pytest.FixtureRequest,
    envoy_without_provider: EnvoyProcess,
    envoy_over_http_without_provider: EnvoyProcess,
) -> EnvoyProcess:
    return envoy_without_provider if request.param == "grpc" else envoy_over_http_without_provider


def test_no_token_gets_401_with_bearer_challenge(envoy: EnvoyProcess) -> None:
    reply = http_get(envoy, "/api/forms")

    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="demo"'
    assert reply.json()["error"] == "unauthorized"


def test_garbage_token_gets_401_invalid_token(envoy: EnvoyProcess) -> None:
    reply = http_get(envoy, "/api/forms", token="not-a-real-token")

    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_malformed_authorization_header_gets_401_invalid_request(envoy: EnvoyProcess) -> None:
    reply = http_get(envoy, "/api/forms", headers={"Authorization": 'Bearer a"b'})

    assert reply.status == 401
    assert 'error="invalid_request"' in reply.headers["www-authenticate"]


def test_refresh_token_used_as_bearer_gets_401(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    refresh_token = keycloak.password_grant("bob")["refresh_token"]

    assert http_get(envoy, "/api/forms", token=refresh_token).status == 401


def test_id_token_used_as_bearer_gets_401(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    id_token = keycloak.password_grant("bob", scope="openid")["id_token"]

    assert http_get(envoy, "/api/forms", token=id_token).status == 401


def test_manager_reaches_forms_as_creator(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    token = access_token(keycloak, "bob")
    # The lightweight access token itself names no roles: only introspection can tell.
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "realm_access" not in claims
    assert "resource_access" not in claims

    reply = http_get(envoy, "/api/forms/42", token=token)

    assert reply.status == 200
    seen = reply.upstream_headers
    assert seen["x-auth-roles"] == "creator"
    assert seen["x-auth-username"] == "bob"
    assert seen["x-auth-email"] == "bob@example.com"
    assert seen["x-auth-client"] == "web-app"
    assert seen["x-auth-subject"] == claims.get("sub", seen["x-auth-subject"])
    assert len(seen["x-auth-subject"]) == 36  # Keycloak user ids are UUIDs


def test_manager_is_forbidden_from_admin(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    reply = http_get(envoy, "/admin/users", token=access_token(keycloak, "bob"))

    assert reply.status == 403
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]


def test_org_manager_reaches_admin_as_platform_admin(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    reply = http_get(envoy, "/admin/users", token=access_token(keycloak, "carol"))

    assert reply.status == 200
    assert reply.upstream_headers["x-auth-roles"] == "platformAdmin"


def test_admin_reaches_admin_and_forms(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    token = access_token(keycloak, "alice")

    assert http_get(envoy, "/admin", token=token).upstream_headers["x-auth-roles"] == "admin"
    assert http_get(envoy, "/api/forms", token=token).status == 200


def test_user_without_roles_passes_default_route_only(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = access_token(keycloak, "dave")

    anywhere = http_get(envoy, "/dashboard", token=token)
    assert anywhere.status == 200
    assert "x-auth-roles" not in anywhere.upstream_headers
    assert anywhere.upstream_headers["x-auth-username"] == "dave"
    assert http_get(envoy, "/api/forms", token=token).status == 403


def test_client_sent_identity_headers_never_reach_upstream(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    smuggled = {
        "X-Auth-Roles": "admin",
        "X-Auth-Subject": "root",
        "X-Auth-Email": "evil@example.com",
    }

    reply = http_get(envoy, "/api/forms", token=access_token(keycloak, "bob"), headers=smuggled)

    assert reply.status == 200
    raw = reply.json()["raw_headers"]
    assert isinstance(raw, list)
    roles = [value for name, value in raw if name.lower() == "x-auth-roles"]
    subjects = [value for name, value in raw if name.lower() == "x-auth-subject"]
    assert roles == ["creator"]
    assert subjects != ["root"]
    assert len(subjects) == 1


def test_smuggled_headers_are_removed_on_public_routes_too(envoy: EnvoyProcess) -> None:
    reply = http_get(envoy, "/public/info", headers={"X-Auth-Roles": "admin", "X-Auth-Client": "x"})

    assert reply.status == 200
    seen = reply.upstream_headers
    assert "x-auth-roles" not in seen
    assert "x-auth-client" not in seen


def test_public_route_needs_no_token_but_uses_a_valid_one(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    anonymous = http_get(envoy, "/healthz")
    known = http_get(envoy, "/public/info", token=access_token(keycloak, "bob"))

    assert anonymous.status == 200
    assert "x-auth-subject" not in anonymous.upstream_headers
    assert known.status == 200
    assert known.upstream_headers["x-auth-roles"] == "creator"


def test_dot_segments_cannot_escape_to_a_public_prefix(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = access_token(keycloak, "bob")

    assert http_get(envoy, "/public/../admin/users").status == 401
    assert http_get(envoy, "/public/%2e%2e/admin/users", token=token).status in (400, 403)


def test_service_account_token_identifies_the_client(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = keycloak.client_credentials(REPORTING_JOB_CLIENT_ID, REPORTING_JOB_SECRET)[
        "access_token"
    ]

    reply = http_get(envoy, "/reports", token=token)

    assert reply.status == 200
    assert reply.upstream_headers["x-auth-client"] == "reporting-job"
    assert reply.upstream_headers["x-auth-username"] == "service-account-reporting-job"


def test_token_of_a_logged_out_session_is_refused_after_cache_expiry(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = keycloak.password_grant("carol")["access_token"]
    assert http_get(envoy, "/api/orders", token=token).status == 200

    keycloak.logout_user("carol")

    deadline = time.monotonic() + E2E_CACHE_TTL_S + 5
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(http_get(envoy, "/api/orders", token=token).status)
        if statuses[-1] == 401:
            break
        time.sleep(0.2)
    assert statuses[-1] == 401, statuses
    assert set(statuses) <= {200, 401}


def test_unreachable_keycloak_gives_503_never_200(
    envoy_without_provider: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = access_token(keycloak, "alice")

    reply = http_get(envoy_without_provider, "/api/forms", token=token)

    assert reply.status == 503
    # Over gRPC our JSON body reaches the client. Over HTTP, Envoy answers any 5xx of the
    # authorizer with its own status_on_error (503 here) and no body.
    assert reply.body == b"" or reply.json()["error"] == "temporarily_unavailable"


def test_two_authorization_headers_are_malformed(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    token = access_token(keycloak, "alice")
    connection = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
    try:
        connection.putrequest("GET", "/api/forms", skip_host=True)
        connection.putheader("Host", "app.example")
        connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Authorization", "Bearer other-token")
        connection.endheaders()
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 401
    assert 'error="invalid_request"' in (response.getheader("www-authenticate") or "")
