"""Route policy: ordered routes, first match wins, no match is None; permits() on roles/scopes."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from extauthz_server.config.model import Config
from extauthz_server.core.policy import Policy, RouteMatch
from extauthz_server.core.routes import HostMatcher, PathKind, PathMatcher, Route


def route(
    name: str,
    pattern: str,
    kind: PathKind = PathKind.PREFIX,
    *,
    host: str | None = None,
    methods: Iterable[str] | None = None,
    any_of: Iterable[str] = (),
    all_of: Iterable[str] = (),
    scopes: Iterable[str] = (),
) -> Route:
    return Route(
        name=name,
        path=PathMatcher.compile(kind, pattern),
        host=HostMatcher(host) if host is not None else None,
        methods=frozenset(methods) if methods is not None else None,
        any_of=frozenset(any_of),
        all_of=frozenset(all_of),
        scopes=frozenset(scopes),
    )


def _route_of(found: RouteMatch | None) -> Route | None:
    return found.route if found is not None else None


def matched(
    policy: Policy, path: str, *, host: str = "api.example.com", method: str = "GET"
) -> str | None:
    found = policy.match(host, path, method)
    return found.route.name if found is not None else None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/healthz", "health"),
        ("/healthz/live", "health"),
        ("/admin", "admin"),
        ("/admin/users/1", "admin"),
        ("/administrator", "default"),
        ("/api/forms", "forms"),
        ("/api/forms/7", "forms"),
        ("/api/formsx", "default"),
        ("/api", "default"),
        ("/", "default"),
    ],
    ids=[
        "health",
        "under-health",
        "admin",
        "under-admin",
        "administrator-is-not-admin",
        "forms",
        "under-forms",
        "forms-prefix-of-longer-name",
        "parent-of-forms",
        "root",
    ],
)
def test_seed_policy_routes_paths(seed_config: Config, path: str, expected: str) -> None:
    assert matched(seed_config.policy, path) == expected


def test_first_matching_route_wins_even_if_a_later_one_is_more_specific() -> None:
    policy = Policy.of([route("broad", "/api"), route("narrow", "/api/forms")])
    assert matched(policy, "/api/forms/1") == "broad"


def test_no_matching_route_gives_none() -> None:
    policy = Policy.of([route("admin", "/admin")])
    assert policy.match("h", "/other", "GET") is None


def test_empty_policy_matches_nothing() -> None:
    assert Policy.of([]).match("h", "/", "GET") is None


# (kind, pattern, path, matches)
PATH_CASES: list[tuple[PathKind, str, str, bool]] = [
    (PathKind.PREFIX, "/admin", "/admin", True),
    (PathKind.PREFIX, "/admin", "/admin/", True),
    (PathKind.PREFIX, "/admin", "/admin/x", True),
    (PathKind.PREFIX, "/admin", "/administrator", False),
    (PathKind.PREFIX, "/admin", "/admi", False),
    (PathKind.PREFIX, "/admin", "/x/admin", False),
    (PathKind.PREFIX, "/admin", "/Admin", False),
    (PathKind.PREFIX, "/admin/", "/admin/x", True),
    (PathKind.PREFIX, "/admin/", "/admin/", True),
    (PathKind.PREFIX, "/admin/", "/admin", False),
    (PathKind.PREFIX, "/", "/anything/at/all", True),
    (PathKind.PREFIX, "/", "/", True),
    (PathKind.EXACT, "/healthz", "/healthz", True),
    (PathKind.EXACT, "/healthz", "/healthz/", False),
    (PathKind.EXACT, "/healthz", "/healthz/x", False),
    (PathKind.EXACT, "/healthz", "/health", False),
    (PathKind.GLOB, "/api/*/items", "/api/v1/items", True),
    (PathKind.GLOB, "/api/*/items", "/api//items", True),
    (PathKind.GLOB, "/api/*/items", "/api/v1/x/items", False),
    (PathKind.GLOB, "/api/**/items", "/api/v1/x/items", True),
    (PathKind.GLOB, "/api/**/items", "/api/v1/items", True),
    (PathKind.GLOB, "/files/**", "/files/a/b/c", True),
    (PathKind.GLOB, "/files/**", "/files/", True),
    (PathKind.GLOB, "/files/**", "/files", False),
    (PathKind.GLOB, "/files/*", "/files/a", True),
    (PathKind.GLOB, "/files/*", "/files/a/b", False),
    (PathKind.GLOB, "/*.json", "/data.json", True),
    (PathKind.GLOB, "/*.json", "/dataxjson", False),
    (PathKind.GLOB, "/*.json", "/a/data.json", False),
    (PathKind.GLOB, "/a+b(c)", "/a+b(c)", True),
    (PathKind.GLOB, "/a+b(c)", "/aab(c)", False),
    (PathKind.GLOB, "/users/*", "/users/1/extra", False),
]
PATH_IDS = [
    "prefix-equal",
    "prefix-trailing-slash",
    "prefix-child",
    "prefix-is-segment-aware",
    "prefix-shorter-path",
    "prefix-anchored-at-start",
    "prefix-case-sensitive",
    "slash-prefix-child",
    "slash-prefix-equal",
    "slash-prefix-not-without-slash",
    "catch-all",
    "catch-all-root",
    "exact",
    "exact-not-trailing-slash",
    "exact-not-child",
    "exact-not-shorter",
    "star-one-segment",
    "star-empty-segment",
    "star-not-two-segments",
    "double-star-two-segments",
    "double-star-one-segment",
    "double-star-deep",
    "double-star-empty",
    "double-star-needs-slash",
    "star-child",
    "star-not-grandchild",
    "star-within-segment",
    "regex-metachars-escaped",
    "star-not-across-slash-within-name",
    "regex-plus-and-parens-literal",
    "regex-plus-not-quantifier",
    "star-anchored-at-end",
]


@pytest.mark.parametrize(("kind", "pattern", "path", "matches"), PATH_CASES, ids=PATH_IDS)
def test_path_matchers(kind: PathKind, pattern: str, path: str, matches: bool) -> None:
    assert PathMatcher.compile(kind, pattern).matches(path) is matches


@pytest.mark.parametrize("kind", list(PathKind), ids=[kind.value for kind in PathKind])
def test_pattern_must_start_with_slash(kind: PathKind) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        PathMatcher.compile(kind, "admin")


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.COM", True),
        ("api.example.com", "api.example.com:8443", True),
        ("api.example.com", "API.EXAMPLE.COM:80", True),
        ("api.example.com", "other.example.com", False),
        ("api.example.com", "api.example.com.evil.net", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "A.Example.com:443", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", "example.com.evil.net", False),
        ("[::1]", "[::1]:8080", True),
        ("[::1]", "[::1]", True),
        ("127.0.0.1", "127.0.0.1:9000", True),
    ],
    ids=[
        "exact",
        "case-insensitive",
        "port-ignored",
        "case-and-port",
        "other-host",
        "suffix-attack",
        "wildcard-subdomain",
        "wildcard-deep-subdomain",
        "wildcard-case-and-port",
        "wildcard-not-apex",
        "wildcard-not-empty-label",
        "wildcard-label-boundary",
        "wildcard-suffix-attack",
        "ipv6-with-port",
        "ipv6",
        "ipv4-with-port",
    ],
)
def test_host_matching_through_policy(pattern: str, host: str, matches: bool) -> None:
    policy = Policy.of([route("r", "/", host=pattern)])
    assert (matched(policy, "/x", host=host) == "r") is matches


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", "writes"), ("POST", "writes"), ("DELETE", None), ("get", None)],
    ids=["listed", "listed-other", "unlisted-stops-the-search", "methods-are-case-sensitive"],
)
def test_methods_restrict_a_route(method: str, expected: str | None) -> None:
    policy = Policy.of([route("writes", "/api", methods={"GET", "POST"}), route("fallback", "/")])
    assert matched(policy, "/api/x", method=method) == expected


def test_unlisted_method_does_not_fall_through_to_a_broader_route(seed_config: Config) -> None:
    # PATCH /admin must not reach the catch-all route that any authenticated user passes.
    assert matched(seed_config.policy, "/admin/users/1", method="PATCH") is None
    assert matched(seed_config.policy, "/admin/users/1", method="DELETE") == "admin"
    assert matched(seed_config.policy, "/dashboard", method="PATCH") == "default"


def test_later_route_for_the_same_path_may_take_other_methods() -> None:
    policy = Policy.of(
        [
            route("read", "/api/forms", methods={"GET"}),
            route("write", "/api/forms", methods={"POST"}, any_of={"creator"}),
            route("other", "/api"),
        ]
    )
    assert _route_of(policy.match("h", "/api/forms/1", "GET")) is policy.routes[0]
    assert _route_of(policy.match("h", "/api/forms/1", "POST")) is policy.routes[1]
    assert policy.match("h", "/api/forms/1", "DELETE") is None
    assert _route_of(policy.match("h", "/api/other", "DELETE")) is policy.routes[2]


def test_route_needs_method_host_and_path_to_all_match() -> None:
    r = route("r", "/api", host="api.example.com", methods={"GET"})
    assert r.matches("api.example.com", "/api", "GET")
    assert not r.matches("other.example.com", "/api", "GET")
    assert not r.matches("api.example.com", "/other", "GET")
    assert not r.matches("api.example.com", "/api", "POST")


# (any_of, all_of, scopes, caller roles, caller scopes, permitted)
PERMITS: list[tuple[set[str], set[str], set[str], set[str], set[str], bool]] = [
    (set(), set(), set(), set(), set(), True),
    (set(), set(), set(), {"anything"}, {"openid"}, True),
    ({"admin", "platformAdmin"}, set(), set(), {"admin"}, set(), True),
    ({"admin", "platformAdmin"}, set(), set(), {"platformAdmin", "x"}, set(), True),
    ({"admin", "platformAdmin"}, set(), set(), {"creator"}, set(), False),
    ({"admin", "platformAdmin"}, set(), set(), set(), set(), False),
    (set(), {"a", "b"}, set(), {"a", "b", "c"}, set(), True),
    (set(), {"a", "b"}, set(), {"a"}, set(), False),
    ({"x", "y"}, {"a"}, set(), {"x", "a"}, set(), True),
    ({"x", "y"}, {"a"}, set(), {"x"}, set(), False),
    ({"x", "y"}, {"a"}, set(), {"a"}, set(), False),
    (set(), set(), {"orders:read"}, set(), {"orders:read", "openid"}, True),
    (set(), set(), {"orders:read", "orders:write"}, set(), {"orders:read"}, False),
    (set(), set(), {"orders:read"}, {"orders:read"}, set(), False),
    ({"admin"}, set(), {"s"}, {"admin"}, set(), False),
    ({"admin"}, set(), {"s"}, {"admin"}, {"s"}, True),
]
PERMITS_IDS = [
    "no-requirements-any-authenticated",
    "no-requirements-with-roles",
    "any-of-first",
    "any-of-second",
    "any-of-none-held",
    "any-of-no-roles",
    "all-of-held",
    "all-of-partly-held",
    "any-of-and-all-of-held",
    "any-of-held-all-of-not",
    "all-of-held-any-of-not",
    "scope-held",
    "scope-partly-held",
    "role-is-not-a-scope",
    "role-but-no-scope",
    "role-and-scope",
]


@pytest.mark.parametrize(
    ("any_of", "all_of", "scopes", "roles", "caller_scopes", "permitted"), PERMITS, ids=PERMITS_IDS
)
def test_permits(
    any_of: set[str],
    all_of: set[str],
    scopes: set[str],
    roles: set[str],
    caller_scopes: set[str],
    permitted: bool,
) -> None:
    r = route("r", "/", any_of=any_of, all_of=all_of, scopes=scopes)
    assert r.permits(frozenset(roles), frozenset(caller_scopes)) is permitted


SHADOWS: list[tuple[str, Route, Route, bool]] = [
    ("slash-prefix-covers-all", route("a", "/"), route("b", "/api"), True),
    (
        "glob-all-covers-all",
        route("a", "/**", PathKind.GLOB),
        route("b", "/x", PathKind.EXACT),
        True,
    ),
    ("prefix-covers-deeper-prefix", route("a", "/api"), route("b", "/api/forms"), True),
    ("prefix-covers-exact-inside", route("a", "/api"), route("b", "/api/x", PathKind.EXACT), True),
    ("prefix-covers-its-own-exact", route("a", "/api"), route("b", "/api", PathKind.EXACT), True),
    ("same-prefix-twice", route("a", "/api"), route("b", "/api"), True),
    ("prefix-not-sibling", route("a", "/api"), route("b", "/apiary"), False),
    ("prefix-not-glob", route("a", "/api"), route("b", "/api/*", PathKind.GLOB), False),
    ("exact-not-prefix", route("a", "/api", PathKind.EXACT), route("b", "/api"), False),
    ("host-limited", route("a", "/", host="a.example.com"), route("b", "/api"), False),
    (
        "same-host",
        route("a", "/", host="a.example.com"),
        route("b", "/api", host="a.example.com"),
        True,
    ),
    ("methods-limited", route("a", "/", methods={"GET"}), route("b", "/api"), False),
    (
        "methods-superset",
        route("a", "/", methods={"GET", "POST"}),
        route("b", "/api", methods={"GET"}),
        True,
    ),
    ("narrower-first", route("a", "/api/forms"), route("b", "/api"), False),
]


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [case[1:] for case in SHADOWS],
    ids=[case[0] for case in SHADOWS],
)
def test_a_route_is_shadowed_only_when_an_earlier_one_takes_all_its_requests(
    earlier: Route, later: Route, shadowed: bool
) -> None:
    assert earlier.shadows(later) is shadowed


@pytest.mark.parametrize(
    "host",
    ["admin.example", "admin.example.", "ADMIN.example.:443", "admin.example:", "admin.example:80"],
    ids=["plain", "trailing-dot", "dot-and-port", "empty-port", "port"],
)
def test_host_spellings_of_one_name_match_its_route(host: str) -> None:
    policy = Policy.of([route("scoped", "/", host="admin.example")])
    assert _route_of(policy.match(host, "/x", "GET")) is policy.routes[0]
