"""Signed identity tokens as deployed: real Keycloak, our server, real Envoy, an echo upstream
that verifies what it received against the JWKS our server publishes, with pyjwt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.e2e.conftest import http_get
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.envoy import EnvoyProcess
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak import Keycloak
from tests.support.signing_keys import ec_key, write_private_key

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]

HEADER = "x-auth-identity-token"


@pytest.fixture(scope="module")
def signing_process(
    keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthzProcess]:
    # A fresh JVM answers its first introspections slowly; a deployed Keycloak is warm.
    warm_up = keycloak.password_grant("bob")["access_token"]
    for _ in range(30):
        keycloak.introspect(warm_up)
    workdir = tmp_path_factory.mktemp("authz-identity-token")
    write_private_key(workdir / "identity-es256.pem", ec_key())
    text = seed_config_text(keycloak.issuer, timeout_ms=200) + (
        "identity_token:\n"
        "  key_file: identity-es256.pem\n"
        "  audience: demo-upstreams\n"
        "  ttl_seconds: 60\n"
    )
    process = AuthzProcess.start(text, workdir)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def signing_envoy(signing_process: AuthzProcess, envoy_factory: EnvoyFactory) -> EnvoyProcess:
    return envoy_factory(signing_process.grpc_port)


def received(raw_headers: object, name: str) -> list[str]:
    assert isinstance(raw_headers, list)
    return [value for header, value in raw_headers if header == name]


def verify_as_upstream(process: AuthzProcess, token: str) -> dict[str, Any]:
    """What an upstream does: keys from the JWKS by `kid`, explicit `typ`, then the claims."""
    keys = jwt.PyJWKClient(f"http://127.0.0.1:{process.http_port}/.well-known/jwks.json")
    assert jwt.get_unverified_header(token)["typ"] == "extauthz-id+jwt"
    claims: dict[str, Any] = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token),
        algorithms=["ES256", "RS256"],
        issuer="extauthz-server",
        audience="demo-upstreams",
        options={"require": ["iss", "sub", "aud", "iat", "exp"]},
        leeway=5,
    )
    return claims


def test_upstream_verifies_the_minted_token_and_never_sees_a_client_copy(
    signing_envoy: EnvoyProcess, signing_process: AuthzProcess, keycloak: Keycloak
) -> None:
    access_token = str(keycloak.password_grant("bob")["access_token"])
    token_exp = jwt.decode(access_token, options={"verify_signature": False})["exp"]

    reply = http_get(
        signing_envoy,
        "/api/forms/7",
        token=access_token,
        headers={"X-Auth-Identity-Token": "forged"},
    )

    assert reply.status == 200
    tokens = received(reply.json()["raw_headers"], HEADER)
    assert len(tokens) == 1
    assert tokens[0] != "forged"
    claims = verify_as_upstream(signing_process, tokens[0])
    assert claims["sub"] == reply.upstream_headers["x-auth-subject"]
    assert claims["roles"] == ["creator"]
    assert claims["route"] == "forms"
    assert claims["client_id"] == "web-app"
    assert claims["exp"] <= token_exp


def test_anonymous_request_cannot_smuggle_an_identity_token(signing_envoy: EnvoyProcess) -> None:
    reply = http_get(signing_envoy, "/public/info", headers={"X-Auth-Identity-Token": "forged"})

    assert reply.status == 200
    assert received(reply.json()["raw_headers"], HEADER) == []


def test_forged_token_fails_verification_against_the_published_keys(
    signing_process: AuthzProcess,
) -> None:
    forged = jwt.encode(
        {"iss": "extauthz-server", "sub": "root", "aud": "demo-upstreams", "roles": ["admin"]},
        ec_key(),
        algorithm="ES256",
        headers={"typ": "extauthz-id+jwt", "kid": "made-up"},
    )

    with pytest.raises(jwt.PyJWKClientError):
        verify_as_upstream(signing_process, forged)
