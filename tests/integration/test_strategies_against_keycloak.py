"""Each identity strategy, and several providers, against the real Keycloak of the test session:
our server runs in-process on port 0 and is called over gRPC like Envoy calls it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extauthz_server.cache.local_cache import Invalidation
from extauthz_server.config.model import parse_config
from tests.integration.conftest import Launch, RunningAuthz
from tests.support.check_requests import call_check, check_request, upstream_headers
from tests.support.configs import DEMO_CLIENT_SECRET, SEED_ROUTES
from tests.support.keycloak import (
    PARTNER_PORTAL_CLIENT_ID,
    PARTNERS_EXT_AUTHZ_SECRET,
    PARTNERS_REALM,
    REALM,
    Keycloak,
)
from tests.support.permissions_api import Fault as PermissionsFault
from tests.support.permissions_api import PermissionsApi
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.keycloak

OK, UNAUTHENTICATED, PERMISSION_DENIED = 0, 16, 7
MAPPING = {"admin": ["admin"], "manager": ["creator"], "org manager": ["platformAdmin"]}


def demo_provider(keycloak: Keycloak, **changes: Any) -> dict[str, Any]:
    return {
        "name": "demo",
        "issuer": keycloak.issuer_of(REALM),
        "client_id": "ext-authz",
        "client_secret": DEMO_CLIENT_SECRET,
        "timeout_ms": 2000,
    } | changes


def partners_provider(keycloak: Keycloak, **changes: Any) -> dict[str, Any]:
    return {
        "name": "partners",
        "issuer": keycloak.issuer_of(PARTNERS_REALM),
        "client_id": "ext-authz",
        "client_secret": PARTNERS_EXT_AUTHZ_SECRET,
        "timeout_ms": 2000,
        "strategy": "jwt",
        "jwt": {"audiences": ["ext-authz"]},
    } | changes


class Running:
    def __init__(self, authz: RunningAuthz) -> None:
        self.server = authz.server
        self.channel = authz.channel

    async def check(
        self, path: str, token: str | None, method: str = "GET"
    ) -> tuple[int, dict[str, str]]:
        response = await call_check(self.channel, check_request(path, method=method, token=token))
        return response.status.code, upstream_headers(response)

    def introspections(self) -> int:
        return sum(self.server.metrics.introspections.values())


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
def start(launch: Launch) -> Start:
    async def start(
        providers: list[dict[str, Any]],
        routes: list[dict[str, Any]] | None = None,
        mapping: dict[str, list[str]] | None = None,
        cache: dict[str, Any] | None = None,
    ) -> Running:
        document = {
            "server": {
                "grpc_listen": "127.0.0.1:0",
                "http_listen": "127.0.0.1:0",
                "grace_period_s": 1,
            },
            "providers": providers,
            "roles": {"mapping": MAPPING | (mapping or {})},
            "cache": {"ttl_seconds": 60, "max_entries": 10_000} | (cache or {}),
            "routes": routes or SEED_ROUTES,
        }
        authz = await launch(parse_config(yaml.safe_dump(document), {}), None)
        deadline = time.monotonic() + 10
        while not authz.server.is_ready():
            assert time.monotonic() < deadline, "providers never became ready"
            await asyncio.sleep(0.05)
        return Running(authz)

    return start


def partner_token(keycloak: Keycloak, user: str = "erin") -> str:
    tokens = keycloak.password_grant(user, client_id=PARTNER_PORTAL_CLIENT_ID, realm=PARTNERS_REALM)
    return str(tokens["access_token"])


def demo_tokens(keycloak: Keycloak, user: str = "bob") -> dict[str, Any]:
    return keycloak.password_grant(user)


# -- introspection (the default) ---------------------------------------------------------------


async def test_introspection_strategy_reads_roles_from_keycloak(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([demo_provider(keycloak, strategy="introspection")])

    status, headers = await authz.check("/api/forms", demo_tokens(keycloak)["access_token"])

    assert status == OK
    assert headers["x-auth-roles"] == "creator"
    assert authz.introspections() == 1


# -- jwt ---------------------------------------------------------------------------------------


async def test_jwt_strategy_authorises_full_tokens_without_calling_keycloak(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([partners_provider(keycloak)])
    erin, frank = partner_token(keycloak, "erin"), partner_token(keycloak, "frank")

    erin_status, erin_headers = await authz.check("/api/forms", erin)
    frank_status, _ = await authz.check("/api/forms", frank)

    assert erin_status == OK
    assert erin_headers["x-auth-roles"] == "creator"
    assert erin_headers["x-auth-username"] == "erin"
    assert frank_status == PERMISSION_DENIED
    assert authz.introspections() == 0


async def test_under_jwt_a_logged_out_session_is_refused_although_its_token_still_validates(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([partners_provider(keycloak)])
    token = partner_token(keycloak)
    session_id = jwt.decode(token, options={"verify_signature": False})["sid"]
    assert (await authz.check("/api/forms", token))[0] == OK

    # What a back-channel logout from Keycloak does for this session.
    await authz.server.providers[0].resolver.invalidate(Invalidation(session_id=session_id))

    assert (await authz.check("/api/forms", token))[0] == UNAUTHENTICATED
    assert (await authz.check("/api/forms", partner_token(keycloak)))[0] == OK  # a new login
    assert authz.introspections() == 0


async def test_under_jwt_a_replica_that_missed_a_logout_learns_it_when_it_subscribes_again(
    keycloak: Keycloak, start: Start, redis_server: RedisServer
) -> None:
    cache = {"redis_url": redis_server.url, "redis_timeout_ms": 1000}
    first = await start([partners_provider(keycloak)], cache=cache)
    second = await start([partners_provider(keycloak)], cache=cache)
    token = partner_token(keycloak)
    session_id = jwt.decode(token, options={"verify_signature": False})["sid"]
    for replica in (first, second):
        assert (await replica.check("/api/forms", token))[0] == OK
    shared = second.server.shared_cache
    assert shared is not None
    resubscriptions = shared.resubscriptions

    # The logout is published while no replica listens: only its marker in Redis remains.
    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    await first.server.providers[0].resolver.invalidate(Invalidation(session_id=session_id))
    deadline = time.monotonic() + 5
    while shared.resubscriptions == resubscriptions:
        assert time.monotonic() < deadline, "the second replica did not subscribe again"
        await asyncio.sleep(0.02)

    assert (await second.check("/api/forms", token))[0] == UNAUTHENTICATED


async def test_jwt_strategy_refuses_lightweight_id_and_other_audience_tokens(
    keycloak: Keycloak, start: Start
) -> None:
    # Demo's web-app issues lightweight tokens (no sub, no roles): they cannot stand alone.
    authz = await start([demo_provider(keycloak, strategy="jwt")])
    tokens = demo_tokens(keycloak)

    lightweight, _ = await authz.check("/", tokens["access_token"])
    id_token, _ = await authz.check("/", tokens["id_token"])

    assert lightweight == UNAUTHENTICATED
    assert id_token == UNAUTHENTICATED


async def test_jwt_strategy_checks_the_audience_when_configured(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([partners_provider(keycloak, jwt={"audiences": ["some-other-api"]})])

    status, _ = await authz.check("/", partner_token(keycloak))

    assert status == UNAUTHENTICATED


def _hs256(kid: str, claims: dict[str, Any], secret: bytes) -> str:
    def part(document: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(document).encode()).decode()

    signing_input = f"{part({'alg': 'HS256', 'kid': kid})}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{jwt.utils.base64url_encode(signature).decode()}"


def _forgeries(genuine: str) -> dict[str, str]:
    header = jwt.get_unverified_header(genuine)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = attacker_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = jwt.utils.base64url_encode(
        json.dumps(claims | {"realm_access": {"roles": ["admin"]}}).encode()
    )
    none_header = jwt.utils.base64url_encode(
        json.dumps({"alg": "none", "kid": header["kid"]}).encode()
    )
    return {
        "alg none": f"{none_header.decode()}.{body.decode()}.",
        "signed by another key under Keycloak's kid": jwt.encode(
            claims, attacker_key, "RS256", headers={"kid": header["kid"]}
        ),
        # HS256 keyed with a public key: what alg confusion looks like on the wire.
        "HS256 with a public key as secret": _hs256(header["kid"], claims, public_pem),
        "payload swapped": ".".join([genuine.split(".")[0], body.decode(), genuine.split(".")[2]]),
    }


async def test_forged_tokens_are_rejected_by_jwt_and_never_reach_keycloak(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([partners_provider(keycloak)])
    genuine = partner_token(keycloak)

    results = {
        name: (await authz.check("/admin", forged))[0]
        for name, forged in _forgeries(genuine).items()
    }

    assert results == dict.fromkeys(results, UNAUTHENTICATED)
    assert authz.server.metrics.jwt_validations["invalid"] == len(results)


async def test_unknown_kid_after_a_key_rotation_causes_exactly_one_jwks_refetch(
    keycloak: Keycloak, start: Start
) -> None:
    # The rotation comes seconds after start-up: the start-up fetch does not hold back the
    # refetch that the first token with the new kid needs.
    authz = await start([partners_provider(keycloak)])
    keys = authz.server.providers[0].keys
    old = partner_token(keycloak)
    assert (await authz.check("/", old))[0] == OK
    fetches_before = keys.fetches

    keycloak.add_signing_key(
        PARTNERS_REALM, f"rotated-{secrets.token_hex(4)}", priority=500 + secrets.randbelow(1000)
    )
    new = partner_token(keycloak)
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    new_tokens = [new, *(partner_token(keycloak) for _ in range(4))]
    statuses = await asyncio.gather(*(authz.check("/", t) for t in new_tokens * 4))

    assert [status for status, _ in statuses] == [OK] * len(statuses)
    assert keys.fetches == fetches_before + 1
    # Tokens naming a kid nobody publishes do not make us refetch again within the interval.
    forged = jwt.encode({"iss": keycloak.issuer_of(PARTNERS_REALM)}, "x" * 32, "HS256")
    unknown_kid = jwt.encode(
        jwt.decode(new, options={"verify_signature": False}),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RS256",
        headers={"kid": "never-published"},
    )
    for value in (forged, unknown_kid, unknown_kid):
        assert (await authz.check("/", value))[0] == UNAUTHENTICATED
    assert keys.fetches == fetches_before + 1


# -- jwt_then_introspection --------------------------------------------------------------------


async def test_lightweight_mode_introspects_genuine_tokens_for_roles(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([demo_provider(keycloak, strategy="jwt_then_introspection")])

    status, headers = await authz.check("/api/forms", demo_tokens(keycloak)["access_token"])

    assert status == OK
    assert headers["x-auth-roles"] == "creator"
    assert authz.introspections() == 1


async def test_lightweight_mode_makes_no_keycloak_call_for_1000_garbage_tokens(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start([demo_provider(keycloak, strategy="jwt_then_introspection")])
    tokens = demo_tokens(keycloak)
    garbage = [secrets.token_urlsafe(secrets.randbelow(900) + 20) for _ in range(600)]
    garbage += [".".join(secrets.token_urlsafe(n) for n in (20, 200, 256)) for _ in range(300)]
    garbage += [tokens["id_token"], tokens["refresh_token"]] * 50

    statuses = [(await authz.check("/api/forms", value))[0] for value in garbage]

    assert statuses == [UNAUTHENTICATED] * 1000
    assert authz.introspections() == 0
    assert authz.server.local_cache is not None
    assert len(authz.server.local_cache) == 0
    # The random strings and the malformed "JWTs" are turned away before any cache lookup.
    assert authz.server.resolver is not None
    assert authz.server.resolver.stats.screened_out >= 900


async def test_lightweight_mode_skips_introspection_for_complete_tokens(
    keycloak: Keycloak, start: Start
) -> None:
    provider = partners_provider(
        keycloak, strategy="jwt_then_introspection", jwt={"complete_when_claims": ["realm_access"]}
    )
    authz = await start([provider])

    status, headers = await authz.check("/api/forms", partner_token(keycloak))

    assert status == OK
    assert headers["x-auth-roles"] == "creator"
    assert authz.introspections() == 0


# -- several providers -------------------------------------------------------------------------


async def test_two_realms_each_token_goes_to_its_own_provider(
    keycloak: Keycloak, start: Start
) -> None:
    authz = await start(
        [demo_provider(keycloak, strategy="jwt_then_introspection"), partners_provider(keycloak)]
    )

    bob_status, bob_headers = await authz.check("/api/forms", demo_tokens(keycloak)["access_token"])
    erin_status, erin_headers = await authz.check("/api/forms", partner_token(keycloak))

    assert (bob_status, bob_headers["x-auth-username"]) == (OK, "bob")
    assert (erin_status, erin_headers["x-auth-username"]) == (OK, "erin")
    demo, partners = authz.server.providers
    assert (len(demo.local), len(partners.local)) == (1, 1)
    assert authz.introspections() == 1  # bob's roles; erin's came from her token


async def test_route_naming_a_provider_refuses_the_other_realms_tokens(
    keycloak: Keycloak, start: Start
) -> None:
    routes = [
        {"name": "partners-api", "path_prefix": "/partners", "provider": "partners", "any_of": []},
        *SEED_ROUTES,
    ]
    authz = await start([demo_provider(keycloak), partners_provider(keycloak)], routes)

    demo_user, _ = await authz.check("/partners/x", demo_tokens(keycloak)["access_token"])
    partner_user, _ = await authz.check("/partners/x", partner_token(keycloak))

    assert demo_user == UNAUTHENTICATED
    assert partner_user == OK


# -- a strategy of your own --------------------------------------------------------------------


async def test_custom_strategy_by_import_path_composes_with_introspection(
    keycloak: Keycloak, start: Start, tmp_path: Path
) -> None:
    api_key = "ak_" + secrets.token_urlsafe(24)
    keys_file = tmp_path / "api-keys.json"
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    keys_file.write_text(json.dumps({digest: {"subject": "billing-batch", "roles": ["manager"]}}))
    provider = demo_provider(
        keycloak,
        strategy="examples.api_key_strategy:ApiKeysOrKeycloak",
        strategy_options={"keys_file": str(keys_file)},
    )
    authz = await start([provider])

    key_status, key_headers = await authz.check("/api/forms", api_key)
    wrong_key, _ = await authz.check("/api/forms", "ak_" + secrets.token_urlsafe(24))
    bob_status, bob_headers = await authz.check("/api/forms", demo_tokens(keycloak)["access_token"])

    assert (key_status, key_headers["x-auth-subject"], key_headers["x-auth-roles"]) == (
        OK,
        "billing-batch",
        "creator",
    )
    assert wrong_key == UNAUTHENTICATED
    assert (bob_status, bob_headers["x-auth-roles"]) == (OK, "creator")
    assert authz.introspections() == 1


# -- permissions from a remote API ------------------------------------------------------------


@pytest.fixture
async def permissions_api() -> AsyncIterator[PermissionsApi]:
    api = PermissionsApi()
    await api.start()
    yield api
    await api.stop()


REGION_ROUTES = [
    {"name": "regions", "path_prefix": "/regions", "any_of": ["regional-manager"]},
    *SEED_ROUTES,
]


def _issued_to_ext_authz(keycloak: Keycloak) -> Callable[[str | None], bool]:
    """The API accepts only a client-credentials token Keycloak issued to ext-authz."""

    def accept(authorization: str | None) -> bool:
        if authorization is None or not authorization.startswith("Bearer "):
            return False
        claims = jwt.decode(authorization[7:], options={"verify_signature": False})
        return bool(claims.get("azp") == "ext-authz" and claims.get("iss") == keycloak.issuer)

    return accept


async def test_permissions_api_roles_map_like_provider_roles(
    keycloak: Keycloak, start: Start, permissions_api: PermissionsApi
) -> None:
    permissions_api.permissions[keycloak.user_id("bob")] = ["Manager for Europe"]
    permissions_api.authorize = _issued_to_ext_authz(keycloak)
    provider = demo_provider(
        keycloak,
        strategy="jwt_then_introspection",
        permissions={"url": permissions_api.url_template, "auth": "client_credentials"},
    )
    authz = await start([provider], REGION_ROUTES, {"Manager for Europe": ["regional-manager"]})
    bob, dave = demo_tokens(keycloak)["access_token"], demo_tokens(keycloak, "dave")["access_token"]

    bob_results = [await authz.check("/regions/eu", bob) for _ in range(5)]
    dave_status, _ = await authz.check("/regions/eu", dave)

    assert [status for status, _ in bob_results] == [OK] * 5
    assert bob_results[0][1]["x-auth-roles"] == "creator,regional-manager"
    assert dave_status == PERMISSION_DENIED  # not in the API: 404, no permissions
    assert permissions_api.request_count == 2  # one per subject, then cached
    assert all(call.authorization for call in permissions_api.calls)


@pytest.mark.parametrize(("on_failure", "expected"), [("deny", 14), ("ignore", OK)])
async def test_permissions_api_failure_follows_the_policy(
    keycloak: Keycloak,
    start: Start,
    permissions_api: PermissionsApi,
    on_failure: str,
    expected: int,
) -> None:
    permissions_api.fault = PermissionsFault.SERVER_ERROR
    provider = demo_provider(
        keycloak,
        permissions={"url": permissions_api.url_template, "on_failure": on_failure},
    )
    authz = await start([provider])

    status, headers = await authz.check("/api/forms", demo_tokens(keycloak)["access_token"])

    assert status == expected
    if expected == OK:
        assert headers["x-auth-roles"] == "creator"
