"""Keycloak Authorization Services as a route's decision, with a typed fake for Keycloak:
what each answer becomes, that the route's resource and scope are what is asked, and the
configuration errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Reason
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.permissions import (
    GrantedPermissions,
    PermissionAnswer,
    PermissionQuery,
)
from extauthz_server.core.request import AuthRequest
from extauthz_server.errors import (
    ConfigError,
    ProviderError,
    ProviderRejectedClient,
    ProviderUnavailable,
)
from extauthz_server.metadata.uma_grant import (
    decision_of,
    decode_verdict,
    encode_verdict,
    permissions_of,
)

PROVIDER = """\
provider:
  issuer: "http://127.0.0.1:8080/realms/facts"
  client_id: ext-authz
  client_secret: s3cret
  authorization_services: {audience: forms-api}
roles:
  mapping: {manager: [creator]}
"""
ROUTES = """\
routes:
  - name: region-forms
    path_template: "/api/regions/{region}/forms/{rest=**}"
    permission:
      resource: "region-{region|lower}"
      scope: {GET: read, HEAD: read, POST: write}
  - name: reports
    path_prefix: /reports
    any_of: [creator]
    permission: {resource: reports, scope: read}
"""

Outcome = PermissionAnswer | ProviderError


def one_route(spec: str) -> str:
    return "routes:\n  - {name: r, path_prefix: /r, " + spec + "}\n"


@dataclass
class Keycloak:
    """Answers per (resource, scope); records what it was asked."""

    answers: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    asked: list[tuple[str, str, str | None]] = field(default_factory=list)
    queries: list[PermissionQuery] = field(default_factory=list)

    async def decide(
        self,
        token: str,
        identity: Identity,
        query: PermissionQuery,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        self.asked.append((query.resource, query.scope, provider))
        self.queries.append(query)
        outcome = self.answers.get((query.resource, query.scope), PermissionAnswer.DENIED)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome


class Callers:
    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        roles = frozenset({"manager"}) if token == "manager" else frozenset()
        return Identity("u-1", "bob", None, "web-app", frozenset(), roles, None)


def authorizer(keycloak: Keycloak, config: Config | None = None) -> Authorizer:
    config = config or parse_config(PROVIDER + ROUTES, {})
    return Authorizer(authorizer_settings(config), Callers(), permissions=keycloak)


async def decide(
    checks: Authorizer,
    method: str,
    path: str,
    token: str = "user",  # noqa: S107 - a caller's name in the fake
) -> tuple[int, Reason]:
    request = AuthRequest(method, "app.example.com", path, {"authorization": f"Bearer {token}"})
    decision = await checks.check(request, 1.0)
    return decision.status, decision.reason


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        (PermissionAnswer.GRANTED, 200, Reason.ALLOWED),
        (PermissionAnswer.DENIED, 403, Reason.PERMISSION_DENIED),
        (PermissionAnswer.TOKEN_INVALID, 401, Reason.INVALID_TOKEN),
        (PermissionAnswer.MISCONFIGURED, 403, Reason.PERMISSION_ERROR),
        (ProviderUnavailable("UMA decision timed out"), 503, Reason.PROVIDER_UNAVAILABLE),
        (ProviderRejectedClient("UMA decision answered 401"), 503, Reason.PROVIDER_REJECTED_CLIENT),
    ],
    ids=["granted", "denied", "token-invalid", "misconfigured", "unavailable", "our-client"],
)
async def test_keycloaks_answer_decides_the_route(
    outcome: Outcome, status: int, reason: Reason
) -> None:
    keycloak = Keycloak({("region-europe", "read"): outcome})

    assert await decide(authorizer(keycloak), "GET", "/api/regions/Europe/forms/1") == (
        status,
        reason,
    )
    assert keycloak.asked == [("region-europe", "read", None)]


async def test_the_decision_names_the_permission_asked_for_the_audit_line() -> None:
    keycloak = Keycloak({("region-europe", "read"): PermissionAnswer.GRANTED})
    checks = authorizer(keycloak)
    bearer = {"authorization": "Bearer user"}

    granted = await checks.check(
        AuthRequest("GET", "h", "/api/regions/europe/forms/1", bearer), 1.0
    )
    denied = await checks.check(AuthRequest("POST", "h", "/api/regions/asia/forms/1", bearer), 1.0)
    unnamed = await checks.check(
        AuthRequest("PATCH", "h", "/api/regions/asia/forms/1", bearer), 1.0
    )

    assert (granted.allowed, granted.permission) == (True, "region-europe#read")
    assert (denied.allowed, denied.permission) == (False, "region-asia#write")
    assert (unnamed.reason, unnamed.permission) == (Reason.PERMISSION_DENIED, None)
    assert "permission" not in granted.metadata


async def test_the_method_chooses_the_scope_and_an_unnamed_method_is_refused_without_a_call() -> (
    None
):
    keycloak = Keycloak({("region-asia", "write"): PermissionAnswer.GRANTED})
    checks = authorizer(keycloak)

    assert await decide(checks, "POST", "/api/regions/asia/forms/1") == (200, Reason.ALLOWED)
    assert await decide(checks, "DELETE", "/api/regions/asia/forms/1") == (
        403,
        Reason.PERMISSION_DENIED,
    )
    assert keycloak.asked == [("region-asia", "write", None)]


async def test_roles_are_checked_before_keycloak_is_asked() -> None:
    keycloak = Keycloak({("reports", "read"): PermissionAnswer.GRANTED})
    checks = authorizer(keycloak)

    assert await decide(checks, "GET", "/reports/q3") == (403, Reason.INSUFFICIENT_ROLE)
    assert keycloak.asked == []
    assert await decide(checks, "GET", "/reports/q3", token="manager") == (200, Reason.ALLOWED)


async def test_every_check_of_a_permission_route_asks_its_source_no_remembered_allow() -> None:
    keycloak = Keycloak({("reports", "read"): PermissionAnswer.GRANTED})
    checks = authorizer(keycloak)

    for _ in range(3):
        await decide(checks, "GET", "/reports", token="manager")
    keycloak.answers[("reports", "read")] = PermissionAnswer.DENIED

    assert await decide(checks, "GET", "/reports", token="manager") == (
        403,
        Reason.PERMISSION_DENIED,
    )
    assert len(keycloak.asked) == 4


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"result":true}', PermissionAnswer.GRANTED),
        (
            403,
            b'{"error":"access_denied","error_description":"not_authorized"}',
            PermissionAnswer.DENIED,
        ),
        (
            400,
            b'{"error":"invalid_grant","error_description":"Invalid bearer token"}',
            PermissionAnswer.TOKEN_INVALID,
        ),
        (
            400,
            b'{"error":"unauthorized_client","error_description":"Invalid identity"}',
            PermissionAnswer.TOKEN_INVALID,
        ),
        (
            400,
            b'{"error":"invalid_resource",'
            b'"error_description":"Resource with id [x] does not exist."}',
            PermissionAnswer.MISCONFIGURED,
        ),
        (400, b'{"error":"invalid_scope"}', PermissionAnswer.MISCONFIGURED),
        (
            400,
            b'{"error":"invalid_request","error_description":"Unknown resource server id: [nope]"}',
            PermissionAnswer.MISCONFIGURED,
        ),
    ],
    ids=[
        "granted",
        "denied",
        "bad-token",
        "bad-subject-token",
        "unknown-resource",
        "unknown-scope",
        "unknown-audience",
    ],
)
def test_a_uma_decision_response_is_read_as_keycloak_means_it(
    status: int, body: bytes, expected: PermissionAnswer
) -> None:
    assert decision_of(status, body) is expected


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{"error":"unauthorized_client"}', ProviderRejectedClient),
        (500, b"oops", ProviderUnavailable),
        (200, b'{"result":false}', ProviderUnavailable),
        (200, b"<html>", ProviderUnavailable),
        (403, b"{}", ProviderUnavailable),
    ],
    ids=[
        "our-credentials",
        "server-error",
        "result-not-true",
        "not-json",
        "403-without-access-denied",
    ],
)
def test_a_uma_response_that_is_no_answer_is_never_a_grant(
    status: int, body: bytes, error: type[ProviderError]
) -> None:
    with pytest.raises(error):
        decision_of(status, body)


def test_the_circuit_breaker_of_keycloak_decisions_is_configured_like_the_permissions_apis() -> (
    None
):
    text = PROVIDER.replace(
        "{audience: forms-api}",
        "{audience: forms-api, circuit_breaker: {failures: 3, open_seconds: 2}}",
    )

    services = parse_config(text + ROUTES, {}).provider.authorization_services

    assert services is not None
    assert (services.circuit_breaker.failure_threshold, services.circuit_breaker.open_s) == (3, 2)
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("failures: 3", "failurez: 3") + ROUTES, {})
    assert caught.value.key_path == "provider.authorization_services.circuit_breaker.failurez"


@pytest.mark.parametrize(
    ("provider", "routes", "key", "problem"),
    [
        (
            PROVIDER.replace("  authorization_services: {audience: forms-api}\n", ""),
            ROUTES,
            "routes[0].permission",
            "needs a provider with authorization_services",
        ),
        (
            PROVIDER,
            one_route('permission: {resource: "region-{region}", scope: read}'),
            "routes[0].permission.resource",
            "{region}",
        ),
        (
            PROVIDER,
            one_route("permission: {resource: x}"),
            "routes[0].permission.scope",
            "expected a scope name",
        ),
        (
            PROVIDER,
            one_route("permission: {resource: x, scope: {GET: ''}}"),
            "routes[0].permission.scope",
            "METHOD: scope",
        ),
        (
            PROVIDER,
            one_route("public: true, permission: {resource: x, scope: read}"),
            "routes[0].permission",
            "public",
        ),
        (
            PROVIDER.replace("{audience: forms-api}", "{audience: forms-api, mode: rpt}"),
            "routes: []\n",
            "provider.authorization_services.mode",
            "expected decision or permissions",
        ),
        (
            PROVIDER,
            one_route("permission: {scope: read}"),
            "routes[0].permission.resource",
            "or by_uri: true",
        ),
        (
            PROVIDER,
            one_route("permission: {by_uri: true, resource: x, scope: read}"),
            "routes[0].permission.resource",
            "either resource or by_uri",
        ),
        (
            PROVIDER.replace("{audience: forms-api}", "{audience: forms-api, mode: permissions}"),
            one_route("permission: {by_uri: true, scope: read}"),
            "routes[0].permission.by_uri",
            "needs authorization_services.mode: decision",
        ),
        (
            PROVIDER.replace("  client_secret: s3cret\n", "  strategy: jwt\n"),
            "routes: []\n",
            "provider.authorization_services",
            "client_secret",
        ),
    ],
    ids=[
        "no-provider-decides",
        "uncaptured-placeholder",
        "no-scope",
        "empty-scope",
        "public-route",
        "unknown-mode",
        "no-resource",
        "resource-and-by-uri",
        "by-uri-in-permissions-mode",
        "no-secret",
    ],
)
def test_a_bad_permission_is_a_configuration_error_naming_the_key(
    provider: str, routes: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(provider + routes, {})

    assert caught.value.key_path == key
    assert problem in caught.value.problem


BY_URI = """\
routes:
  - name: regions
    path_prefix: /api/regions/
    permission: {by_uri: true, scope: {GET: read, POST: write}}
"""


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/regions/europe/forms/7?draft=1", "/api/regions/europe/forms/7"),
        ("/api/regions/./europe//forms/../forms/7", "/api/regions/europe/forms/7"),
        ("/api/regions/caf%C3%A9/forms", "/api/regions/caf%C3%A9/forms"),
        ("/api/regions/100%25/x", "/api/regions/100%25/x"),
    ],
    ids=["query-dropped", "dot-segments", "non-ascii", "encoded-percent"],
)
async def test_by_uri_asks_about_the_normalised_request_path_as_keycloak_reads_a_uri(
    path: str, resource: str
) -> None:
    keycloak = Keycloak()
    checks = authorizer(keycloak, parse_config(PROVIDER + BY_URI, {}))

    await decide(checks, "POST", path)

    assert keycloak.queries == [PermissionQuery(resource, "write", by_uri=True)]


async def test_by_uri_refuses_an_encoded_hash_before_asking() -> None:
    # Decoded, it would end the resource early and name a scope of the caller's choice.
    keycloak = Keycloak()
    checks = authorizer(keycloak, parse_config(PROVIDER + BY_URI, {}))

    assert await decide(checks, "GET", "/api/regions/europe%23write/x") == (
        400,
        Reason.BAD_REQUEST,
    )
    assert keycloak.queries == []


async def test_by_uri_refuses_a_method_without_a_scope_without_asking() -> None:
    keycloak = Keycloak()
    checks = authorizer(keycloak, parse_config(PROVIDER + BY_URI, {}))

    assert await decide(checks, "DELETE", "/api/regions/europe/forms/7") == (
        403,
        Reason.PERMISSION_DENIED,
    )
    assert keycloak.queries == []


PERMISSIONS_LIST = (
    b'[{"scopes":["read","write"],"rsid":"id-eu","rsname":"region-europe"},'
    b'{"scopes":["read"],"rsid":"id-asia","rsname":"region-asia"}]'
)


@pytest.mark.parametrize(
    ("resource", "scope", "expected"),
    [
        ("region-europe", "write", PermissionAnswer.GRANTED),
        ("region-asia", "read", PermissionAnswer.GRANTED),
        ("id-asia", "read", PermissionAnswer.GRANTED),
        ("region-asia", "write", PermissionAnswer.DENIED),
        ("region-mars", "read", PermissionAnswer.DENIED),
    ],
)
def test_in_permissions_mode_each_pair_is_looked_up_in_what_keycloak_listed(
    resource: str, scope: str, expected: PermissionAnswer
) -> None:
    verdict = permissions_of(200, PERMISSIONS_LIST)

    assert isinstance(verdict, GrantedPermissions)
    assert verdict.answer_for(PermissionQuery(resource, scope)) is expected


def test_in_permissions_mode_access_denied_means_nothing_granted_and_a_bad_token_is_invalid() -> (
    None
):
    nothing = permissions_of(403, b'{"error":"access_denied","error_description":"not_authorized"}')
    bad_token = permissions_of(400, b'{"error":"unauthorized_client"}')

    assert isinstance(nothing, GrantedPermissions)
    assert nothing.answer_for(PermissionQuery("region-europe", "read")) is PermissionAnswer.DENIED
    assert bad_token is PermissionAnswer.TOKEN_INVALID


@pytest.mark.parametrize(
    "body",
    [b'{"result":true}', b"[1]", b'[{"rsname":"x","scopes":"read"}]', b'[{"rsname":7}]', b"["],
    ids=["decision-shape", "not-objects", "scopes-not-a-list", "name-not-text", "not-json"],
)
def test_a_permissions_answer_of_the_wrong_shape_is_no_answer(body: bytes) -> None:
    with pytest.raises(ProviderUnavailable):
        permissions_of(200, body)


@pytest.mark.parametrize(
    "verdict",
    [
        PermissionAnswer.GRANTED,
        PermissionAnswer.TOKEN_INVALID,
        GrantedPermissions({"région-europe": frozenset({"read", "write"})}),
        GrantedPermissions({}),
    ],
    ids=["granted", "token-invalid", "grants", "nothing"],
)
def test_a_verdict_shared_through_redis_reads_back_the_same(
    verdict: PermissionAnswer | GrantedPermissions,
) -> None:
    assert decode_verdict(encode_verdict(verdict)) == verdict
    assert decode_verdict("[1]") is None
