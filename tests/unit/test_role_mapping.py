"""Provider roles read from claim paths, then mapped many-to-many onto internal roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extauthz_server.config.model import Config
from extauthz_server.core.roles import (
    DEFAULT_ROLE_CLAIMS,
    ClaimPath,
    RoleMap,
    is_header_safe_role,
    read_roles,
)

CLIENT_ID = "ext-authz"


def paths(*templates: str, client_id: str = CLIENT_ID) -> tuple[ClaimPath, ...]:
    return tuple(ClaimPath.compile(template, client_id) for template in templates)


# (claim templates, document, expected provider roles)
READ_CASES: list[tuple[tuple[str, ...], dict[str, object], frozenset[str]]] = [
    (
        ("realm_access.roles",),
        {"realm_access": {"roles": ["admin", "user"]}},
        frozenset({"admin", "user"}),
    ),
    (
        ("resource_access.{client_id}.roles",),
        {"resource_access": {CLIENT_ID: {"roles": ["orders.read"]}, "account": {"roles": ["x"]}}},
        frozenset({"orders.read"}),
    ),
    (
        DEFAULT_ROLE_CLAIMS,
        {
            "realm_access": {"roles": ["admin"]},
            "resource_access": {CLIENT_ID: {"roles": ["orders.read"]}},
        },
        frozenset({"admin", "orders.read"}),
    ),
    (("groups",), {"groups": ["/admins", "/orgs/acme"]}, frozenset({"/admins", "/orgs/acme"})),
    (("scope",), {"scope": "openid  email\tprofile"}, frozenset({"openid", "email", "profile"})),
    (("scope",), {"scope": ""}, frozenset()),
    (("realm_access.roles",), {}, frozenset()),
    (("realm_access.roles",), {"realm_access": None}, frozenset()),
    (("realm_access.roles",), {"realm_access": ["admin"]}, frozenset()),
    (("realm_access.roles",), {"realm_access": "admin"}, frozenset()),
    (("realm_access.roles",), {"realm_access": {"roles": 7}}, frozenset()),
    (("realm_access.roles",), {"realm_access": {"roles": {"admin": True}}}, frozenset()),
    (("realm_access.roles",), {"realm_access": {"roles": True}}, frozenset()),
    (
        ("realm_access.roles",),
        {"realm_access": {"roles": ["admin", 1, None, "", ["nested"], {"x": 1}, True]}},
        frozenset({"admin"}),
    ),
    (
        ("realm_access.roles", "groups"),
        {"realm_access": {"roles": ["admin"]}, "groups": ["admin", "/g"]},
        frozenset({"admin", "/g"}),
    ),
    (("a.b.c.d",), {"a": {"b": {"c": {"d": ["deep"]}}}}, frozenset({"deep"})),
]
READ_IDS = [
    "realm-roles",
    "client-roles-only-for-our-client",
    "default-claims-union",
    "groups",
    "scope-string-split-on-whitespace",
    "empty-scope",
    "claim-missing",
    "claim-null",
    "intermediate-is-list",
    "intermediate-is-string",
    "roles-is-number",
    "roles-is-mapping",
    "roles-is-bool",
    "non-string-and-empty-items-dropped",
    "several-claims-deduplicated",
    "deep-path",
]


@pytest.mark.parametrize(("templates", "document", "expected"), READ_CASES, ids=READ_IDS)
def test_roles_are_read_from_claim_paths(
    templates: tuple[str, ...], document: dict[str, object], expected: frozenset[str]
) -> None:
    assert read_roles(document, paths(*templates)) == expected


def test_client_id_with_dots_stays_one_path_segment() -> None:
    client_id = "app.example.com"
    claim = ClaimPath.compile("resource_access.{client_id}.roles", client_id)
    assert claim.segments == ("resource_access", "app.example.com", "roles")
    assert claim.text == "resource_access.{client_id}.roles"
    document = {
        "resource_access": {
            "app.example.com": {"roles": ["editor"]},
            "app": {"example": {"com": {"roles": ["wrong"]}}},
        }
    }
    assert read_roles(document, (claim,)) == frozenset({"editor"})


def test_roles_of_another_client_are_not_read() -> None:
    document = {"resource_access": {"other-client": {"roles": ["admin"]}}}
    assert read_roles(document, paths("resource_access.{client_id}.roles")) == frozenset()


def test_keycloak_sample_roles_are_read_with_seed_claims(
    seed_config: Config, introspection_sample: Callable[[str], dict[str, object]]
) -> None:
    roles = read_roles(introspection_sample("active"), seed_config.role_claims)
    assert roles == {
        "default-roles-demo",
        "offline_access",
        "admin",
        "uma_authorization",
        "orders.read",
        "orders.write",
    }


SEED_MAP = RoleMap(
    table={
        "admin": frozenset({"admin"}),
        "manager": frozenset({"creator"}),
        "org manager": frozenset({"platformAdmin"}),
    }
)
MANY_TO_MANY = RoleMap(
    table={
        "admin": frozenset({"admin", "creator"}),
        "editor": frozenset({"creator"}),
        "auditor": frozenset({"reader"}),
    }
)

MAP_CASES: list[tuple[RoleMap, set[str], frozenset[str]]] = [
    (SEED_MAP, {"admin"}, frozenset({"admin"})),
    (SEED_MAP, {"manager"}, frozenset({"creator"})),
    (SEED_MAP, {"org manager"}, frozenset({"platformAdmin"})),
    (
        SEED_MAP,
        {"admin", "manager", "org manager"},
        frozenset({"admin", "creator", "platformAdmin"}),
    ),
    (SEED_MAP, {"offline_access", "uma_authorization"}, frozenset()),
    (SEED_MAP, {"Admin", "ADMIN", "admin "}, frozenset()),
    (SEED_MAP, {"org", "manager"}, frozenset({"creator"})),
    (SEED_MAP, set(), frozenset()),
    (MANY_TO_MANY, {"admin"}, frozenset({"admin", "creator"})),
    (MANY_TO_MANY, {"admin", "editor"}, frozenset({"admin", "creator"})),
    (MANY_TO_MANY, {"editor", "auditor", "other"}, frozenset({"creator", "reader"})),
]
MAP_IDS = [
    "admin-to-admin",
    "manager-to-creator",
    "name-with-space-to-platform-admin",
    "all-seed-roles",
    "unmapped-dropped",
    "matching-is-exact-and-case-sensitive",
    "space-split-name-does-not-match-org-manager",
    "no-roles",
    "one-to-many",
    "many-to-one-deduplicated",
    "mixed-with-unmapped",
]


@pytest.mark.parametrize(("role_map", "provider", "expected"), MAP_CASES, ids=MAP_IDS)
def test_provider_roles_map_to_internal_roles(
    role_map: RoleMap, provider: set[str], expected: frozenset[str]
) -> None:
    assert role_map.map(provider) == expected


def test_seed_config_role_map_is_the_documented_table(seed_config: Config) -> None:
    assert seed_config.role_map == SEED_MAP


PASS_THROUGH = RoleMap(table={"admin": frozenset({"platformAdmin"})}, pass_through_unmapped=True)


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"orders.read"}, frozenset({"orders.read"})),
        ({"admin"}, frozenset({"platformAdmin"})),
        ({"admin", "orders.read"}, frozenset({"platformAdmin", "orders.read"})),
        ({"/orgs/acme", "with space"}, frozenset({"/orgs/acme", "with space"})),
        ({"a,b"}, frozenset()),
        ({"evil\r\nx-auth-roles: admin"}, frozenset()),
        ({"tab\there"}, frozenset()),
        ({"del\x7f"}, frozenset()),
        ({"nul\x00"}, frozenset()),
        ({""}, frozenset()),
        ({"ok", "bad,role"}, frozenset({"ok"})),
    ],
    ids=[
        "unmapped-kept",
        "mapped-replaced-not-kept",
        "mapped-and-unmapped",
        "slashes-and-spaces-allowed",
        "comma-dropped",
        "crlf-dropped",
        "tab-dropped",
        "del-dropped",
        "nul-dropped",
        "empty-dropped",
        "only-unsafe-ones-dropped",
    ],
)
def test_pass_through_keeps_unmapped_header_safe_roles(
    provider: set[str], expected: frozenset[str]
) -> None:
    assert PASS_THROUGH.map(provider) == expected


def test_mapped_roles_are_not_filtered_by_header_safety() -> None:
    # The config loader refuses unsafe internal names; the map itself trusts its table.
    role_map = RoleMap(table={"weird,name": frozenset({"safe"})})
    assert role_map.map({"weird,name"}) == frozenset({"safe"})


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("admin", True),
        ("org manager", True),
        ("ünïcödé", True),
        ("", False),
        ("a,b", False),
        ("a\nb", False),
        ("a\x1fb", False),
        ("a\x7fb", False),
    ],
    ids=["plain", "space", "non-ascii", "empty", "comma", "newline", "unit-separator", "del"],
)
def test_header_safe_role_names(name: str, safe: bool) -> None:
    assert is_header_safe_role(name) is safe
