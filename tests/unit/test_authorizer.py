"""The check pipeline end to end over the seed config, with a typed fake IdentitySource."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest
import yaml

from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer, IdentitySource
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import Identity, Inactive, identity_from_introspection
from extauthz_server.core.request import AuthRequest
from extauthz_server.errors import ProviderError, ProviderRejectedClient, ProviderUnavailable

SAMPLE_NOW = 1767225700.0
TIMEOUT_S = 0.15
IDENTITY_HEADERS = (
    "x-auth-subject",
    "x-auth-username",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-client",
)

# Metadata keys that describe a caller; a deny or an anonymous allow carries none of them.
IDENTITY_METADATA = frozenset({"subject", "roles", "client"})

Outcome = Identity | Inactive | ProviderError


@dataclass
class FakeIdentitySource:
    """Answers per token from a table; unknown tokens are inactive. Records every call."""

    outcomes: Mapping[str, Outcome]
    calls: list[tuple[str, float]] = field(default_factory=list)

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.calls.append((token, timeout_s))
        outcome = self.outcomes.get(token, Inactive.NOT_ACTIVE)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome


settings_from = authorizer_settings


@pytest.fixture(scope="module")
def outcomes(
    seed_config: Config, introspection_sample: Callable[[str], dict[str, object]]
) -> dict[str, Outcome]:
    def identity(sample: str, **changes: object) -> Identity:
        document = introspection_sample(sample)
        document.update(changes)
        result = identity_from_introspection(document, seed_config.role_claims, SAMPLE_NOW)
        assert isinstance(result, Identity), result
        return result

    return {
        "alice": identity("active"),  # realm role admin → admin
        "bob": identity("bob-manager"),  # realm role manager → creator
        "carol": identity(
            "active",
            sub="carol-id",
            realm_access={"roles": ["offline_access"]},
            resource_access={},
        ),
        "dana": identity(
            "active",
            sub="dana-id",
            realm_access={"roles": ["org manager"]},
            email="dana\r\nx-auth-roles: admin",
        ),
        "service": identity("service-account"),
        "inactive": Inactive.NOT_ACTIVE,
        "expired": Inactive.EXPIRED,
        "down": ProviderUnavailable("connection refused"),
        "rejected": ProviderRejectedClient("401 from provider"),
    }


@pytest.fixture
def source(outcomes: dict[str, Outcome]) -> FakeIdentitySource:
    return FakeIdentitySource(outcomes)


@pytest.fixture
def authorizer(seed_config: Config, source: FakeIdentitySource) -> Authorizer:
    return Authorizer(settings_from(seed_config), source)


def request(
    path: str,
    token: str | None = None,
    *,
    method: str = "GET",
    host: str = "api.example.com",
    authorization: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> AuthRequest:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    if authorization is not None:
        all_headers["authorization"] = authorization
    return AuthRequest(method=method, host=host, path=path, headers=all_headers)


def www_authenticate(decision: Decision) -> str | None:
    return dict(decision.response_headers).get("www-authenticate")


def test_fake_source_satisfies_the_protocol(source: FakeIdentitySource) -> None:
    typed: IdentitySource = source
    assert typed is source


# (request, status, reason, route)
DENIALS: list[tuple[AuthRequest, int, Reason, str | None]] = [
    (request("/admin/%zz", "alice"), 400, Reason.BAD_REQUEST, None),
    (request("*", "alice"), 400, Reason.BAD_REQUEST, None),
    (request("/admin%00", "alice"), 400, Reason.BAD_REQUEST, None),
    (request("/admin"), 401, Reason.MISSING_TOKEN, "admin"),
    (request("/admin", authorization="Basic YWxpY2U6czNjcmV0"), 401, Reason.MISSING_TOKEN, "admin"),
    (request("/admin", authorization="Bearer a,b"), 401, Reason.MALFORMED_TOKEN, "admin"),
    (request("/admin", authorization="Bearer"), 401, Reason.MALFORMED_TOKEN, "admin"),
    (request("/", authorization="Bearer " + "a" * 8193), 401, Reason.MALFORMED_TOKEN, "default"),
    (request("/admin", "inactive"), 401, Reason.INVALID_TOKEN, "admin"),
    (request("/admin", "expired"), 401, Reason.INVALID_TOKEN, "admin"),
    (request("/admin", "unknown"), 401, Reason.INVALID_TOKEN, "admin"),
    (request("/admin", "down"), 503, Reason.PROVIDER_UNAVAILABLE, "admin"),
    (request("/", "down"), 503, Reason.PROVIDER_UNAVAILABLE, "default"),
    (request("/admin", "rejected"), 503, Reason.PROVIDER_REJECTED_CLIENT, "admin"),
    (request("/admin", "bob"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("/admin", "carol"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("/admin", "service"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("/api/forms", "carol"), 403, Reason.INSUFFICIENT_ROLE, "forms"),
    (request("/api/forms", "dana"), 403, Reason.INSUFFICIENT_ROLE, "forms"),
    (request("/public/../admin", "bob"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("/healthz/../admin"), 401, Reason.MISSING_TOKEN, "admin"),
    (request("/healthz/%2e%2e/admin", "bob"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("/healthz%2F..%2Fadmin", "carol"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
    (request("//admin", "bob"), 403, Reason.INSUFFICIENT_ROLE, "admin"),
]
DENIAL_IDS = [
    "bad-escape-is-400",
    "asterisk-form-is-400",
    "nul-is-400",
    "no-token-is-401",
    "basic-auth-is-missing-401",
    "malformed-token-is-401",
    "scheme-without-token-is-401",
    "oversize-token-is-401",
    "inactive-is-401",
    "expired-is-401",
    "unknown-token-is-401",
    "provider-down-is-503",
    "provider-down-on-any-authenticated-route-is-503",
    "rejected-client-is-503",
    "creator-lacks-admin-403",
    "no-mapped-roles-403",
    "service-account-403",
    "forms-needs-creator-or-admin",
    "platform-admin-is-not-creator",
    "public-dot-dot-admin-judged-as-admin",
    "health-dot-dot-admin-is-not-public",
    "encoded-dot-dot-out-of-health",
    "encoded-slashes-out-of-health",
    "double-slash-admin",
]


@pytest.mark.parametrize(("req", "status", "reason", "route"), DENIALS, ids=DENIAL_IDS)
async def test_denials(
    authorizer: Authorizer, req: AuthRequest, status: int, reason: Reason, route: str | None
) -> None:
    decision = await authorizer.check(req, TIMEOUT_S)
    assert decision.allowed is False
    assert (decision.status, decision.reason, decision.route) == (status, reason, route)
    assert decision.upstream_headers == ()
    assert IDENTITY_METADATA.isdisjoint(decision.metadata)


async def test_no_matching_route_is_403_and_asks_no_provider(seed_yaml: str) -> None:
    without_default = seed_yaml.split("  - {name: default", 1)[0]
    config = parse_config(without_default, {})
    source = FakeIdentitySource({})
    decision = await Authorizer(settings_from(config), source).check(
        request("/elsewhere", "alice"), TIMEOUT_S
    )
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, Reason.NO_ROUTE)
    assert decision.route is None
    assert www_authenticate(decision) is None
    assert source.calls == []


@pytest.mark.parametrize(
    "req",
    [
        request("/admin/%zz", "alice"),
        request("/admin"),
        request("/admin", authorization="Bearer ,"),
    ],
    ids=["bad-path", "missing-token", "malformed-token"],
)
async def test_early_denials_do_not_call_the_provider(
    authorizer: Authorizer, source: FakeIdentitySource, req: AuthRequest
) -> None:
    await authorizer.check(req, TIMEOUT_S)
    assert source.calls == []


async def test_missing_token_gets_bare_challenge_for_the_realm(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin"), TIMEOUT_S)
    assert www_authenticate(decision) == 'Bearer realm="demo"'


async def test_inactive_token_gets_invalid_token_challenge(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin", "inactive"), TIMEOUT_S)
    challenge = www_authenticate(decision)
    assert challenge is not None
    assert 'error="invalid_token"' in challenge


async def test_lacking_role_names_the_subject_but_sends_no_identity(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin", "bob"), TIMEOUT_S)
    assert decision.subject == "abe7b302-2718-4515-9c49-0b1ee45a95f4"
    assert decision.upstream_headers == ()
    challenge = www_authenticate(decision)
    assert challenge is not None
    assert 'error="insufficient_scope"' in challenge


async def test_provider_exception_text_never_reaches_the_client(authorizer: Authorizer) -> None:
    for token in ("down", "rejected"):
        decision = await authorizer.check(request("/admin", token), TIMEOUT_S)
        assert "connection refused" not in decision.body
        assert "401 from provider" not in decision.body


async def test_token_and_timeout_are_passed_to_the_source(
    authorizer: Authorizer, source: FakeIdentitySource
) -> None:
    await authorizer.check(request("/admin", "alice"), 0.042)
    assert source.calls == [("alice", 0.042)]


async def test_allowed_admin_gets_identity_headers_and_metadata(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin/users", "alice", method="DELETE"), TIMEOUT_S)
    assert (decision.allowed, decision.status, decision.reason) == (True, 200, Reason.ALLOWED)
    assert decision.route == "admin"
    assert decision.subject == "a292fb04-15a2-459b-9b29-3bce996095a0"
    assert decision.roles == ("admin",)
    assert dict(decision.upstream_headers) == {
        "x-auth-subject": "a292fb04-15a2-459b-9b29-3bce996095a0",
        "x-auth-username": "alice",
        "x-auth-email": "alice@example.com",
        "x-auth-roles": "admin",
        "x-auth-client": "web-app",
    }
    assert decision.headers_to_remove == ()
    assert (
        decision.metadata.items()
        >= {
            "route": "admin",
            "subject": "a292fb04-15a2-459b-9b29-3bce996095a0",
            "roles": "admin",
            "client": "web-app",
        }.items()
    )
    assert decision.response_headers == ()
    assert decision.body == ""


# (request, route, roles)
ALLOWED: list[tuple[AuthRequest, str, tuple[str, ...]]] = [
    (request("/admin", "dana"), "admin", ("platformAdmin",)),
    (request("/api/forms/1", "bob", method="POST"), "forms", ("creator",)),
    (request("/api/forms", "alice"), "forms", ("admin",)),
    (request("/", "carol"), "default", ()),
    (request("/anything", "service"), "default", ()),
    (request("/ADMIN", "carol"), "default", ()),
    (request("/admin/x", "alice", host="API.EXAMPLE.COM:8443"), "admin", ("admin",)),
    (request("/admin?x=/healthz", "alice"), "admin", ("admin",)),
]
ALLOWED_IDS = [
    "org-manager-is-platform-admin",
    "manager-is-creator-on-forms",
    "admin-on-forms",
    "any-authenticated-on-default",
    "service-account-on-default",
    "paths-are-case-sensitive",
    "host-with-port",
    "query-ignored",
]


@pytest.mark.parametrize(("req", "route", "roles"), ALLOWED, ids=ALLOWED_IDS)
async def test_allowed(
    authorizer: Authorizer, req: AuthRequest, route: str, roles: tuple[str, ...]
) -> None:
    decision = await authorizer.check(req, TIMEOUT_S)
    assert (decision.allowed, decision.status, decision.reason) == (True, 200, Reason.ALLOWED)
    assert (decision.route, decision.roles) == (route, roles)


async def test_identity_without_roles_removes_the_roles_header(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/", "carol"), TIMEOUT_S)
    assert decision.allowed
    assert "x-auth-roles" in decision.headers_to_remove
    assert "x-auth-roles" not in dict(decision.upstream_headers)
    assert decision.metadata["roles"] == ""


async def test_unsafe_identity_value_is_not_forwarded(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin", "dana"), TIMEOUT_S)
    assert decision.allowed
    assert "x-auth-email" in decision.headers_to_remove
    assert dict(decision.upstream_headers)["x-auth-roles"] == "platformAdmin"


@pytest.mark.parametrize(
    "req",
    [
        request("/healthz"),
        request("/healthz/live", authorization="Bearer a,b"),
        request("/healthz", authorization="Basic YWxpY2U6czNjcmV0"),
        request("/healthz", "inactive"),
        request("/healthz", "down"),
        request("/healthz", "rejected"),
    ],
    ids=["no-token", "malformed-token", "basic", "inactive-token", "provider-down", "rejected"],
)
async def test_public_route_allows_anonymously_and_removes_identity_headers(
    authorizer: Authorizer, req: AuthRequest
) -> None:
    smuggled = request(
        req.path,
        headers={**req.headers, "x-auth-subject": "root", "x-auth-roles": "admin"},
    )
    decision = await authorizer.check(smuggled, TIMEOUT_S)
    assert (decision.allowed, decision.status, decision.reason) == (True, 200, Reason.PUBLIC)
    assert decision.route == "health"
    assert decision.subject is None
    assert decision.upstream_headers == ()
    assert decision.headers_to_remove == IDENTITY_HEADERS
    assert decision.metadata["route"] == "health"
    assert IDENTITY_METADATA.isdisjoint(decision.metadata)


async def test_public_route_with_valid_token_injects_identity(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/healthz", "bob"), TIMEOUT_S)
    assert (decision.allowed, decision.reason) == (True, Reason.PUBLIC)
    assert dict(decision.upstream_headers)["x-auth-username"] == "bob"
    assert dict(decision.upstream_headers)["x-auth-roles"] == "creator"
    assert decision.metadata["subject"] == "abe7b302-2718-4515-9c49-0b1ee45a95f4"


async def test_smuggled_identity_headers_are_removed_on_an_allowed_request(
    authorizer: Authorizer,
) -> None:
    req = request("/", "carol", headers={"x-auth-roles": "admin", "x-auth-email": "x@evil"})
    decision = await authorizer.check(req, TIMEOUT_S)
    assert decision.allowed
    assert "x-auth-roles" in decision.headers_to_remove
    assert dict(decision.upstream_headers)["x-auth-email"] == "alice@example.com"


SCOPED_ROUTES = """
  - {name: orders, path_prefix: /orders, any_of: [creator], scopes: [orders.read]}
  - {name: default, path_prefix: /, any_of: []}
"""


def manager_identity(config: Config, scope: str) -> Identity:
    document: dict[str, object] = {
        "active": True,
        "token_type": "Bearer",
        "sub": "bob-id",
        "preferred_username": "bob",
        "scope": scope,
        "realm_access": {"roles": ["manager"]},
    }
    result = identity_from_introspection(document, config.role_claims, SAMPLE_NOW)
    assert isinstance(result, Identity)
    return result


async def test_route_scopes_are_required_and_named_in_the_challenge(seed_yaml: str) -> None:
    text = seed_yaml.split("  - {name: default", 1)[0] + SCOPED_ROUTES.lstrip("\n")
    config = parse_config(text, {})
    source = FakeIdentitySource(
        {
            "unscoped": manager_identity(config, "email profile"),
            "scoped": manager_identity(config, "email orders.read"),
        }
    )
    authorizer = Authorizer(settings_from(config), source)

    denied = await authorizer.check(request("/orders", "unscoped"), TIMEOUT_S)
    assert (denied.status, denied.reason) == (403, Reason.INSUFFICIENT_ROLE)
    challenge = www_authenticate(denied)
    assert challenge is not None
    assert challenge.endswith('scope="orders.read"')

    allowed = await authorizer.check(request("/orders", "scoped"), TIMEOUT_S)
    assert (allowed.allowed, allowed.route) == (True, "orders")


async def test_provider_failure_never_allows_a_protected_route(authorizer: Authorizer) -> None:
    for path in ("/admin", "/api/forms", "/", "/x/../admin", "/anything"):
        for token in ("down", "rejected"):
            for method in ("GET", "POST", "PATCH", "HEAD"):
                decision = await authorizer.check(request(path, token, method=method), TIMEOUT_S)
                assert decision.allowed is False, (path, token, method)
                # /admin lists GET, POST, PUT, DELETE: other methods have no route at all.
                unrouted = "admin" in path and method in ("PATCH", "HEAD")
                assert decision.status == (403 if unrouted else 503), (path, method)


MANAGER_BOB = Identity(
    subject="sub-bob",
    username="bob",
    email=None,
    client_id="web-app",
    scopes=frozenset(),
    provider_roles=frozenset({"manager"}),
    expires_at=None,
)


async def test_a_cached_identity_gets_the_same_decision_until_the_settings_change(
    seed_config: Config,
) -> None:
    bob = MANAGER_BOB
    twin = dataclasses.replace(bob)
    source = FakeIdentitySource({"bob": bob, "twin": twin})
    authorizer = Authorizer(settings_from(seed_config), source)

    first = await authorizer.check(request("/api/forms", "bob"), 0.1)
    again = await authorizer.check(request("/api/forms/2", "bob"), 0.1)
    other_object = await authorizer.check(request("/api/forms", "twin"), 0.1)
    other_route = await authorizer.check(request("/dashboard", "bob"), 0.1)
    authorizer.reconfigure(settings_from(seed_config))
    after_reload = await authorizer.check(request("/api/forms", "bob"), 0.1)

    assert again is first
    assert other_object is not first
    assert other_object == first
    assert other_route.route == "default"
    assert after_reload is not first
    assert after_reload == first


async def test_with_nothing_cached_no_decision_is_kept_for_reuse(
    seed_yaml: str, seed_config: Config
) -> None:
    # ttl_seconds: 0 hands a new identity to every Check: a remembered allow would never be
    # asked for again, and would only keep the identity and its decision alive.
    document = yaml.safe_load(seed_yaml)
    document.setdefault("cache", {})["ttl_seconds"] = 0
    uncached = parse_config(yaml.safe_dump(document), {})
    bob = MANAGER_BOB
    authorizer = Authorizer(settings_from(uncached), FakeIdentitySource({"bob": bob}))

    first = await authorizer.check(request("/api/forms", "bob"), 0.1)
    again = await authorizer.check(request("/api/forms", "bob"), 0.1)

    assert settings_from(uncached).decision_memo_size == 0
    assert settings_from(seed_config).decision_memo_size > 0
    assert first.allowed
    assert again == first
    assert again is not first


async def test_a_route_pinned_to_a_provider_challenges_for_that_providers_realm() -> None:
    document = {
        "providers": [
            {
                "name": "demo",
                "issuer": "https://sso.example.test/realms/demo",
                "client_id": "ext-authz",
                "client_secret": "s3cret",
            },
            {
                "name": "partners",
                "issuer": "https://sso.example.test/realms/partners",
                "strategy": "jwt",
            },
        ],
        "routes": [
            {"name": "partner-api", "path_prefix": "/partners", "provider": "partners"},
            {"name": "default", "path_prefix": "/"},
        ],
    }
    config = parse_config(yaml.safe_dump(document), {})
    authorizer = Authorizer(settings_from(config), FakeIdentitySource({}))

    pinned = await authorizer.check(request("/partners/orders"), TIMEOUT_S)
    unpinned = await authorizer.check(request("/orders"), TIMEOUT_S)
    inactive = await authorizer.check(request("/partners/orders", "unknown"), TIMEOUT_S)

    assert www_authenticate(pinned) == 'Bearer realm="partners"'
    assert www_authenticate(unpinned) == 'Bearer realm="demo"'
    assert (www_authenticate(inactive) or "").startswith('Bearer realm="partners", error=')
