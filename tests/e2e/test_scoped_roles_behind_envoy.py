"""Resource-scoped rules, as deployed: real Envoy → our server → real Keycloak. Keycloak's
realm role `Manager for Europe` maps to `manager:europe`, which the region's forms require;
a condition on Keycloak's `groups` claim keeps each user to their own organisation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import access_token, http_get, warm_up
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.envoy import EnvoyProcess
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak import Keycloak

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]

REGION_ROUTES: list[dict[str, Any]] = [
    {
        "name": "region-forms",
        "path_template": "/api/regions/{region}/forms/{rest=**}",
        "any_of": ["manager:{region|lower}", "admin"],
    },
    {
        "name": "org-api",
        "path_template": "/api/orgs/{org}/{rest=**}",
        "when": '"/orgs/" + params.org in identity.claims.groups',
    },
    {"name": "default", "path_prefix": "/", "any_of": []},
]


@pytest.fixture(scope="module")
def envoy(
    keycloak: Keycloak, envoy_factory: EnvoyFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    warm_up(keycloak)
    text = seed_config_text(
        keycloak.issuer,
        timeout_ms=200,
        routes=REGION_ROUTES,
        role_mapping={"Manager for {region}": ["manager:{region|lower}"]},
    )
    process = AuthzProcess.start(text, tmp_path_factory.mktemp("scoped-authz"))
    yield envoy_factory(process.grpc_port)
    process.stop()


def test_a_europe_manager_reaches_europes_forms_with_the_scoped_role(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    reply = http_get(envoy, "/api/regions/europe/forms/1", token=access_token(keycloak, "maria"))

    assert reply.status == 200
    assert reply.upstream_headers["x-auth-roles"] == "manager:europe"
    assert reply.upstream_headers["x-auth-username"] == "maria"


def test_a_europe_manager_is_forbidden_from_asias_forms(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    reply = http_get(envoy, "/api/regions/asia/forms/1", token=access_token(keycloak, "maria"))

    assert reply.status == 403
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]


def test_an_unscoped_admin_reaches_every_region(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    token = access_token(keycloak, "alice")

    assert http_get(envoy, "/api/regions/asia/forms/1", token=token).status == 200
    assert http_get(envoy, "/api/regions/europe/forms/1", token=token).status == 200


def test_a_manager_without_a_region_is_forbidden(envoy: EnvoyProcess, keycloak: Keycloak) -> None:
    reply = http_get(envoy, "/api/regions/europe/forms/1", token=access_token(keycloak, "bob"))

    assert reply.status == 403


def test_a_condition_on_the_groups_claim_keeps_a_user_to_their_own_organisation(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    # bob is in Keycloak's group /orgs/acme; the introspection answer names it in `groups`.
    token = access_token(keycloak, "bob")

    own = http_get(envoy, "/api/orgs/acme/invoices/7", token=token)
    other = http_get(envoy, "/api/orgs/globex/invoices/7", token=token)
    nobody = http_get(envoy, "/api/orgs/acme/invoices/7", token=access_token(keycloak, "dave"))

    assert own.status == 200
    assert own.upstream_headers["x-auth-username"] == "bob"
    assert other.status == 403
    assert 'error="insufficient_scope"' in other.headers["www-authenticate"]
    assert nobody.status == 403
