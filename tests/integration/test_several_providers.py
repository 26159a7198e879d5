"""Several providers in one server: each has its own caches, in memory and in Redis, so two
providers that know the same `sub` never answer from each other's entries."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
import yaml

from extauthz_server.cache.local_cache import Invalidation
from extauthz_server.config.model import parse_config
from tests.integration.conftest import Launch
from tests.support.check_requests import call_check, check_request, upstream_headers
from tests.support.configs import SEED_ROUTES
from tests.support.keycloak_standin import KeycloakStandIn, active_document
from tests.support.redis_server import RedisServer

SUBJECT = "4a7c0e1e-shared-subject"
OK, PERMISSION_DENIED = 0, 7


def jwt_shaped(issuer: str, name: str) -> str:
    """A token that names its issuer (the router reads `iss`); introspection decides the rest."""

    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'iss': issuer, 'jti': name})}.c2lnbmF0dXJl"


def redis_keys(redis_server: RedisServer, pattern: str) -> list[str]:
    keys = redis_server.command("KEYS", f"extauthz:{pattern}")
    assert isinstance(keys, list)
    return [key.decode() if isinstance(key, bytes) else str(key) for key in keys]


@pytest.fixture
async def two_idps() -> AsyncIterator[tuple[KeycloakStandIn, KeycloakStandIn]]:
    demo, partners = KeycloakStandIn(realm="demo"), KeycloakStandIn(realm="partners")
    await demo.start()
    await partners.start()
    yield demo, partners
    await demo.stop()
    await partners.stop()


async def test_same_subject_at_two_providers_never_shares_cache_entries(
    two_idps: tuple[KeycloakStandIn, KeycloakStandIn], redis_server: RedisServer, launch: Launch
) -> None:
    demo, partners = two_idps
    demo_token = jwt_shaped(demo.issuer, "demo-bob")
    partners_token = jwt_shaped(partners.issuer, "partners-bob")
    demo.documents[demo_token] = active_document("bob", ["manager"], subject=SUBJECT)
    partners.documents[partners_token] = active_document("bob", ["auditor"], subject=SUBJECT)
    providers = [
        {"name": idp.realm, "issuer": idp.issuer, "client_id": "ext-authz", "client_secret": "s"}
        for idp in (demo, partners)
    ]
    document = {
        "server": {"grpc_listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0"},
        "providers": providers,
        "roles": {
            "mapping": {
                "manager": ["creator"],
                "admin": ["admin"],
                "org manager": ["platformAdmin"],
            }
        },
        "cache": {"redis_url": redis_server.url, "redis_timeout_ms": 500},
        "routes": SEED_ROUTES,
    }
    authz = await launch(parse_config(yaml.safe_dump(document), {}), None)
    server, channel = authz.server, authz.channel
    outcomes = []
    for token in (demo_token, partners_token, demo_token, partners_token):
        response = await call_check(channel, check_request("/api/forms", token=token))
        outcomes.append((response.status.code, upstream_headers(response).get("x-auth-roles")))

    assert outcomes == [(OK, "creator"), (PERMISSION_DENIED, None)] * 2
    assert (len(demo.calls), len(partners.calls)) == (1, 1)
    first, second = server.providers
    assert (len(first.local), len(second.local)) == (1, 1)
    assert sorted(k.split(":")[1] for k in redis_keys(redis_server, "*:id:*")) == [
        "demo",
        "partners",
    ]
    # A logout of the subject at one provider leaves the other provider's entries alone.
    dropped = await first.resolver.invalidate(Invalidation(subject=SUBJECT))
    assert dropped == 1
    assert (len(first.local), len(second.local)) == (0, 1)
    assert len(redis_keys(redis_server, "partners:id:*")) == 1
