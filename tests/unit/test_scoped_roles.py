"""Roles scoped to a resource ("Manager for Europe"): provider role patterns that capture part
of a role name, internal roles built from the captures, and routes that require a role for
the resource their path names."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Reason
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.role_templates import RoleTemplate, RoleTemplateError
from extauthz_server.errors import ConfigError

PROVIDER = """\
provider:
  issuer: "http://127.0.0.1:8080/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
"""
REGION_ROUTES = """\
routes:
  - name: region-forms
    path_template: "/api/regions/{region}/forms/{rest=**}"
    any_of: ["manager:{region}", admin]
  - name: region-audit
    path_template: "/api/regions/{region}/audit"
    all_of: ["manager:{region}", "auditor:{region}"]
"""


def config_text(mapping: str, routes: str = REGION_ROUTES, pass_through: bool = False) -> str:
    roles = f"roles:\n  pass_through_unmapped: {str(pass_through).lower()}\n  mapping:\n"
    return PROVIDER + roles + mapping + routes


CASE_FOLDED = config_text(
    '    "Manager for {region}": ["manager:{region|lower}"]\n'
    '    "Auditor of {region}": ["auditor:{region|lower}"]\n'
    "    admin: [admin]\n"
)


def caller(*provider_roles: str, subject: str = "u-1") -> Identity:
    return Identity(
        subject=subject,
        username=None,
        email=None,
        client_id="web-app",
        scopes=frozenset(),
        provider_roles=frozenset(provider_roles),
        expires_at=None,
    )


@dataclass
class Callers:
    by_token: dict[str, Identity] = field(default_factory=dict)

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return self.by_token.get(token, Inactive.NOT_ACTIVE)


async def status_of(authorizer: Authorizer, token: str, path: str, method: str = "GET") -> int:
    request = AuthRequest(method, "app.example.com", path, {"authorization": f"Bearer {token}"})
    return (await authorizer.check(request, 1.0)).status


def authorizer(config: Config, **callers: Identity) -> Authorizer:
    return Authorizer(authorizer_settings(config), Callers(dict(callers)))


@pytest.mark.parametrize(
    ("provider_roles", "internal"),
    [
        (["Manager for Europe"], {"manager:europe"}),
        (["Manager for Europe", "Manager for ASIA"], {"manager:europe", "manager:asia"}),
        (["Manager for Europe", "admin"], {"manager:europe", "admin"}),
        (["Manager for "], set()),
        (["manager for europe"], set()),
        (["Auditor of Europe"], {"auditor:europe"}),
        (["Manager for Europe, Asia"], set()),
    ],
    ids=[
        "captured-and-lowered",
        "two-resources",
        "beside-an-exact-mapping",
        "empty-capture-no-match",
        "literal-part-is-exact",
        "second-pattern",
        "header-unsafe-result-dropped",
    ],
)
def test_a_provider_role_pattern_maps_to_roles_for_its_resource(
    provider_roles: list[str], internal: set[str]
) -> None:
    config = parse_config(CASE_FOLDED, {})

    assert config.role_map.map(provider_roles) == internal


def test_an_exact_mapping_wins_over_a_pattern_and_unmatched_roles_pass_through_if_asked() -> None:
    config = parse_config(
        config_text(
            '    "Manager for {region}": ["manager:{region}"]\n    "Manager for HQ": [admin]\n',
            pass_through=True,
        ),
        {},
    )

    assert config.role_map.map(["Manager for HQ"]) == {"admin"}
    assert config.role_map.map(["Manager for Oslo", "reader"]) == {"manager:Oslo", "reader"}


@pytest.mark.parametrize(
    ("token", "path", "status"),
    [
        ("europe", "/api/regions/europe/forms/1", 200),
        ("europe", "/api/regions/asia/forms/1", 403),
        ("europe", "/api/regions/Europe/forms/1", 403),
        ("admin", "/api/regions/asia/forms/1", 200),
        ("both", "/api/regions/europe/audit", 200),
        ("both", "/api/regions/asia/audit", 403),
        ("europe", "/api/regions/europe/audit", 403),
        ("nobody", "/api/regions/europe/forms/1", 403),
    ],
    ids=[
        "own-region",
        "other-region",
        "url-case-differs-from-the-lowered-role",
        "unscoped-admin-anywhere",
        "all-of-scoped-roles",
        "all-of-other-region",
        "all-of-needs-both",
        "no-role",
    ],
)
async def test_a_route_requires_the_role_for_the_resource_its_path_names(
    token: str, path: str, status: int
) -> None:
    checks = authorizer(
        parse_config(CASE_FOLDED, {}),
        europe=caller("Manager for Europe"),
        admin=caller("admin"),
        both=caller("Manager for Europe", "Auditor of EUROPE"),
        nobody=caller("reader"),
    )

    assert await status_of(checks, token, path) == status


async def test_an_allow_remembered_for_one_resource_is_not_reused_for_another() -> None:
    checks = authorizer(parse_config(CASE_FOLDED, {}), europe=caller("Manager for Europe"))

    first = await status_of(checks, "europe", "/api/regions/europe/forms/1")
    second = await status_of(checks, "europe", "/api/regions/asia/forms/1")
    third = await status_of(checks, "europe", "/api/regions/europe/forms/2")

    assert (first, second, third) == (200, 403, 200)


async def test_without_the_lower_filter_values_compare_exactly_as_captured() -> None:
    checks = authorizer(
        parse_config(
            config_text(
                '    "Manager for {region}": ["manager:{region}"]\n'
                '    "Auditor of {region}": ["auditor:{region}"]\n'
                "    admin: [admin]\n"
            ),
            {},
        ),
        europe=caller("Manager for Europe"),
        lowercase=caller("Manager for europe"),
    )

    assert await status_of(checks, "europe", "/api/regions/europe/forms/1") == 403
    assert await status_of(checks, "europe", "/api/regions/Europe/forms/1") == 200
    assert await status_of(checks, "lowercase", "/api/regions/europe/forms/1") == 200


async def test_the_deny_for_another_resource_is_insufficient_role() -> None:
    checks = authorizer(parse_config(CASE_FOLDED, {}), europe=caller("Manager for Europe"))
    request = AuthRequest(
        "GET", "h", "/api/regions/asia/forms/1", {"authorization": "Bearer europe"}
    )

    decision = await checks.check(request, 1.0)

    assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_ROLE)


@pytest.mark.parametrize(
    ("mapping", "routes", "key", "problem"),
    [
        (
            '    "Manager for {region}": ["manager:{region}"]\n',
            'routes:\n  - {name: r, path_prefix: /api, any_of: ["manager:{region}"]}\n',
            "routes[0].any_of",
            "{region}",
        ),
        (
            '    "Manager for {region}": ["manager:{region}"]\n',
            'routes:\n  - {name: r, path_template: "/api/{id}", all_of: ["manager:{region}"]}\n',
            "routes[0].all_of",
            "{region}",
        ),
        (
            '    "Manager for {region}": ["manager:{region|upper}"]\n',
            "routes: []\n",
            "roles.mapping.Manager for {region}",
            "unknown filter |upper",
        ),
        (
            '    "Manager for {region}": ["manager:{zone}"]\n',
            "routes: []\n",
            "roles.mapping.Manager for {region}",
            "does not capture",
        ),
        (
            '    "Manager for {region} and {region}": ["manager:{region}"]\n',
            "routes: []\n",
            "roles.mapping.Manager for {region} and {region}",
            "once",
        ),
        (
            '    "Manager for {region}": ["manager:{region}"]\n',
            'routes:\n  - {name: r, path_template: "/r/{region}", any_of: ["auditor:{region}"]}\n',
            "routes[0].any_of",
            "not produced by roles.mapping",
        ),
        (
            '    "Manager for {region}": ["manager:{region}"]\n',
            'routes:\n  - {name: r, path_template: "/r/{region}", any_of: ["manager:{region"]}\n',
            "routes[0].any_of",
            "a placeholder is",
        ),
    ],
    ids=[
        "placeholder-without-template",
        "placeholder-not-captured",
        "unknown-filter",
        "output-uses-uncaptured-name",
        "pattern-captures-twice",
        "scoped-role-nobody-gets",
        "unclosed-placeholder",
    ],
)
def test_a_bad_scoped_role_is_a_configuration_error_naming_the_key(
    mapping: str, routes: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(mapping, routes), {})

    assert caught.value.key_path == key
    assert problem in caught.value.problem


def test_a_role_template_renders_captured_values_and_refuses_stray_braces() -> None:
    template = RoleTemplate.parse("manager:{region|lower}/{team}")

    assert template.render({"region": "Europe", "team": "Ops"}) == "manager:europe/Ops"
    assert template.names == {"region", "team"}
    with pytest.raises(RoleTemplateError):
        RoleTemplate.parse("manager:{region")
