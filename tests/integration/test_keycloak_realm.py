"""Facts about the demo realm on a real Keycloak 26.7.3 that the product relies on."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.support.keycloak import (
    EXT_AUTHZ_CLIENT_ID,
    REPORTING_JOB_CLIENT_ID,
    REPORTING_JOB_SECRET,
    Keycloak,
)

pytestmark = pytest.mark.keycloak


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _audiences(doc: dict[str, Any]) -> list[str]:
    aud = doc.get("aud", [])
    return [aud] if isinstance(aud, str) else list(aud)


def _introspect_active(keycloak: Keycloak, token: str) -> dict[str, Any]:
    reply = keycloak.introspect(token)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["active"] is True, doc
    return doc


def test_lightweight_access_token_carries_no_roles(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("bob")

    claims = _claims(tokens["access_token"])

    assert "realm_access" not in claims
    assert "resource_access" not in claims
    assert "aud" not in claims
    assert "preferred_username" not in claims
    assert claims["typ"] == "Bearer"
    assert claims["azp"] == "web-app"
    assert claims["iss"] == keycloak.issuer
    assert claims["jti"].startswith("onltro:")  # online session, lightweight, password grant


def test_introspection_of_bob_has_roles_username_and_audience(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("bob")

    doc = _introspect_active(keycloak, tokens["access_token"])

    assert doc["token_type"] == "Bearer"
    assert doc["typ"] == "Bearer"
    assert doc["username"] == "bob"
    assert doc["preferred_username"] == "bob"
    assert doc["client_id"] == "web-app"
    assert doc["iss"] == keycloak.issuer
    assert set(_audiences(doc)) == {EXT_AUTHZ_CLIENT_ID, "account"}
    assert set(doc["realm_access"]["roles"]) == {
        "manager",
        "offline_access",
        "uma_authorization",
        "default-roles-demo",
    }
    assert doc["resource_access"]["ext-authz"]["roles"] == ["orders.read"]
    assert doc["groups"] == ["/orgs/acme"]
    assert set(doc["scope"].split()) == {"openid", "profile", "email"}  # order varies
    assert doc["email"] == "bob@example.com"


def test_role_name_with_a_space_survives_introspection(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("carol")

    doc = _introspect_active(keycloak, tokens["access_token"])

    assert "org manager" in doc["realm_access"]["roles"]
    assert doc["username"] == "carol"
    assert doc["groups"] == ["/orgs/globex"]


def test_user_without_app_roles_has_only_default_realm_roles(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("dave")

    doc = _introspect_active(keycloak, tokens["access_token"])

    assert set(doc["realm_access"]["roles"]) == {
        "offline_access",
        "uma_authorization",
        "default-roles-demo",
    }
    assert "ext-authz" not in doc["resource_access"]
    assert "groups" not in doc


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", None])
@pytest.mark.parametrize("kind", ["refresh_token", "id_token"])
def test_refresh_and_id_tokens_are_inactive_for_ext_authz(
    keycloak: Keycloak, kind: str, hint: str | None
) -> None:
    # The refresh token's aud is the realm issuer and the ID token's aud is web-app, so the
    # 26.6.2+ audience check answers active:false whatever the hint; no token_type leaks.
    tokens = keycloak.password_grant("bob")
    claims = _claims(tokens[kind])
    assert claims["typ"] == {"refresh_token": "Refresh", "id_token": "ID"}[kind]
    assert EXT_AUTHZ_CLIENT_ID not in _audiences(claims)

    reply = keycloak.introspect(tokens[kind], token_type_hint=hint)

    assert reply.status == 200
    assert reply.json() == {"active": False}


def test_client_credentials_token_introspects_as_service_account(keycloak: Keycloak) -> None:
    tokens = keycloak.client_credentials(REPORTING_JOB_CLIENT_ID, REPORTING_JOB_SECRET)
    assert "refresh_token" not in tokens

    doc = _introspect_active(keycloak, tokens["access_token"])

    assert doc["client_id"] == REPORTING_JOB_CLIENT_ID
    assert doc["azp"] == REPORTING_JOB_CLIENT_ID
    assert doc["username"] == "service-account-reporting-job"
    assert doc["preferred_username"] == "service-account-reporting-job"
    assert doc["token_type"] == "Bearer"
    assert EXT_AUTHZ_CLIENT_ID in _audiences(doc)
    assert doc["jti"].startswith("trrtcc:")
    assert "sid" not in doc
    assert doc["resource_access"]["ext-authz"]["roles"] == ["orders.read"]


def test_introspecting_client_missing_from_aud_gets_inactive(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("bob")

    reply = keycloak.introspect(
        tokens["access_token"], client_id=REPORTING_JOB_CLIENT_ID, secret=REPORTING_JOB_SECRET
    )

    assert reply.status == 200
    assert reply.json() == {"active": False}


@pytest.mark.parametrize(
    ("client_id", "secret", "status", "body"),
    [
        (
            EXT_AUTHZ_CLIENT_ID,
            "wrong-secret",
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed."},
        ),
        (
            "no-such-client",
            "whatever",
            401,
            {
                "error": "invalid_client",
                "error_description": "Invalid client or Invalid client credentials",
            },
        ),
        (
            "web-app",
            "",
            403,
            {"error": "invalid_request", "error_description": "Client not allowed."},
        ),
    ],
    ids=["wrong-secret", "unknown-client", "public-client"],
)
def test_rejected_introspecting_client_gets_error_body(
    keycloak: Keycloak, client_id: str, secret: str, status: int, body: dict[str, str]
) -> None:
    tokens = keycloak.password_grant("bob")

    reply = keycloak.introspect(tokens["access_token"], client_id=client_id, secret=secret)

    assert reply.status == status
    assert reply.json() == body


def test_admin_logout_makes_access_token_inactive(keycloak: Keycloak) -> None:
    tokens = keycloak.password_grant("bob")
    _introspect_active(keycloak, tokens["access_token"])

    keycloak.logout_user("bob")

    reply = keycloak.introspect(tokens["access_token"])
    assert reply.status == 200
    assert reply.json() == {"active": False}


def test_garbage_token_is_inactive_not_an_error(keycloak: Keycloak) -> None:
    reply = keycloak.introspect("not-a-jwt")

    assert reply.status == 200
    assert reply.json() == {"active": False}
