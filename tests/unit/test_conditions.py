"""Route conditions (`routes[].when`, CEL): compiled at load, decided after roles and scopes,
and only a real `true` passes; false and every evaluation error deny, never 5xx, never allow."""

from __future__ import annotations

import logging

import pytest

from extauthz_server.cache.entries import CacheEntry, decode_entry, encode_entry
from extauthz_server.cache.local_cache import LocalIdentityCache
from extauthz_server.cache.resolver import CachePolicy, IdentityResolver
from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.conditions import Condition, ConditionError
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import Identity, Inactive, identity_from_claims
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.roles import ClaimPath
from tests.unit.test_config import config_error, with_routes

ROLE_CLAIMS = (ClaimPath.compile("realm_access.roles", "ext-authz"),)
TENANT_ROUTE = (
    "{name: tenant, path_template: '/t/{tenant}/{rest=**}', any_of: [creator],"
    ' when: \'identity.claims.tenant == params.tenant && request.method in ["GET", "POST"]\'}'
)


def person(tenant: str | None = "acme", roles: tuple[str, ...] = ("manager",)) -> Identity:
    claims: dict[str, object] = {"sub": "u-1", "realm_access": {"roles": list(roles)}}
    if tenant is not None:
        claims["tenant"] = tenant
    identity = identity_from_claims(claims, ROLE_CLAIMS, 0.0)
    assert isinstance(identity, Identity)
    return identity


class Callers:
    def __init__(self, **identities: Identity) -> None:
        self._identities = identities

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return self._identities.get(token, Inactive.NOT_ACTIVE)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def authorizer(config: Config, clock: Clock | None = None, **identities: Identity) -> Authorizer:
    settings = authorizer_settings(config)
    return Authorizer(settings, Callers(**identities), clock or Clock())


async def decide(
    checks: Authorizer,
    path: str,
    token: str = "who",  # noqa: S107 - a test caller name
    method: str = "GET",
    **headers: str,
) -> Decision:
    request = AuthRequest(method, "app.example.com", path, {"authorization": f"Bearer {token}"})
    if headers:
        merged = {**request.headers, **{k.replace("_", "-"): v for k, v in headers.items()}}
        request = AuthRequest(method, "app.example.com", path, merged)
    return await checks.check(request, 1.0)


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("request.method ==", "Syntax error"),
        ("tenant == 'acme'", "undeclared reference to 'tenant'"),
        ("'yes'", "gives a string, not a bool"),
        ("1 + 1", "gives a int, not a bool"),
        ("params.region + 1 == 2", "no matching overload"),
    ],
    ids=["syntax", "unknown-variable", "string-result", "int-result", "typed-params"],
)
def test_a_condition_that_cannot_work_is_refused_at_load(when: str, problem: str) -> None:
    with pytest.raises(ConditionError) as caught:
        Condition.compile(when)

    assert problem in str(caught.value)


def test_a_bad_condition_is_a_configuration_error_naming_the_route_key() -> None:
    error = config_error(with_routes("{name: a, path_prefix: /a, when: 'request.method =='}"))

    assert error.key_path == "routes[0].when"
    assert "Syntax error" in error.problem


def test_a_public_route_takes_no_condition() -> None:
    error = config_error(with_routes("{name: a, path_prefix: /a, public: true, when: 'true'}"))

    assert error.key_path == "routes[0].when"


@pytest.mark.parametrize(
    ("identity", "path", "method", "status", "reason"),
    [
        (person("acme"), "/t/acme/forms/1", "GET", 200, Reason.ALLOWED),
        (person("acme"), "/t/globex/forms/1", "GET", 403, Reason.CONDITION_FALSE),
        (person("acme"), "/t/acme/forms/1", "DELETE", 403, Reason.CONDITION_FALSE),
        (person(None), "/t/acme/forms/1", "GET", 403, Reason.CONDITION_ERROR),
        (person("acme", roles=()), "/t/acme/forms/1", "GET", 403, Reason.INSUFFICIENT_ROLE),
    ],
    ids=["own-tenant", "other-tenant", "method-not-listed", "claim-missing", "roles-first"],
)
async def test_a_condition_decides_after_the_roles_pass(
    identity: Identity, path: str, method: str, status: int, reason: Reason
) -> None:
    checks = authorizer(parse_config(with_routes(TENANT_ROUTE), {}), who=identity)

    decision = await decide(checks, path, method=method)

    assert (decision.status, decision.reason) == (status, reason)


@pytest.mark.parametrize(
    ("when", "path", "headers", "allowed"),
    [
        ("request.query.mode == 'read'", "/q?mode=read&mode=write", {}, True),
        ("request.query.mode == 'read'", "/q?mode=write", {}, False),
        ("request.headers['x-team'] == 'blue'", "/q", {"x_team": "blue"}, True),
        ("request.path == '/q/a' && request.host == 'app.example.com'", "/q/x/../a", {}, True),
        ("'creator' in identity.roles && 'manager' in identity.provider_roles", "/q", {}, True),
        ("identity.email == null && identity.subject == 'u-1'", "/q", {}, True),
        ("has(identity.claims.tenant)", "/q", {}, True),
        ("has(identity.claims.nope)", "/q", {}, False),
    ],
    ids=[
        "query-first-value",
        "query-other-value",
        "header-lower-cased",
        "normalised-path-and-bare-host",
        "internal-and-provider-roles",
        "identity-fields",
        "has-claim",
        "has-no-claim",
    ],
)
async def test_a_condition_sees_the_request_and_the_identity(
    when: str, path: str, headers: dict[str, str], allowed: bool
) -> None:
    text = with_routes("{name: q, path_prefix: /q, any_of: [creator], when: WHEN}")
    text = text.replace("WHEN", '"' + when.replace('"', '\\"') + '"')
    checks = authorizer(parse_config(text, {}), who=person())

    decision = await decide(checks, path, **headers)

    assert decision.allowed is allowed, decision.reason


async def test_an_allow_on_a_conditional_route_is_not_reused_for_another_request() -> None:
    checks = authorizer(parse_config(with_routes(TENANT_ROUTE), {}), who=person("acme"))

    first = await decide(checks, "/t/acme/x", method="GET")
    second = await decide(checks, "/t/acme/x", method="DELETE")

    assert (first.status, second.status) == (200, 403)


async def test_an_undecidable_condition_is_logged_once_a_minute_per_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    checks = authorizer(parse_config(with_routes(TENANT_ROUTE), {}), clock, who=person(None))
    caplog.set_level(logging.WARNING, logger="extauthz_server.core.authorizer")

    for _ in range(5):
        await decide(checks, "/t/acme/x")
    clock.now += 61
    await decide(checks, "/t/acme/x")

    lines = [r.getMessage() for r in caplog.records if "condition" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("route tenant: condition could not be decided: ")
    assert "tenant" in lines[0]


class ClaimsStrategy:
    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        return person("acme")


@pytest.mark.parametrize("keep", [False, True], ids=["no-condition-reads-them", "kept"])
async def test_claims_are_cached_only_when_a_condition_reads_them(keep: bool) -> None:
    local = LocalIdentityCache(100, 1 << 20, 60)
    resolver = IdentityResolver(ClaimsStrategy(), local, CachePolicy(60, 10, keep_claims=keep))

    answered = await resolver.resolve("token", 1.0)
    cached = await resolver.resolve("token", 1.0)

    assert isinstance(answered, Identity)
    assert cached is answered
    assert (answered.claims is not None) is keep


def test_a_policy_reads_claims_only_when_a_condition_names_them() -> None:
    reads = parse_config(with_routes(TENANT_ROUTE), {})
    does_not = parse_config(
        with_routes("{name: a, path_prefix: /a, when: 'request.method == \"GET\"'}"), {}
    )

    assert reads.policy.reads_claims
    assert not does_not.policy.reads_claims


def test_claims_travel_through_the_shared_cache_entry() -> None:
    identity = person("acme")
    entry = CacheEntry(identity, 100.0, 100.0)

    decoded = decode_entry(encode_entry(entry)).result

    assert isinstance(decoded, Identity)
    assert decoded.claims == {
        "sub": "u-1",
        "realm_access": {"roles": ["manager"]},
        "tenant": "acme",
    }
