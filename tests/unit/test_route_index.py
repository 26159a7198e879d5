"""The route index finds exactly the route a plain first-match scan finds, on random route
sets and requests; and shadowed routes are found at load as the pairwise check found them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz_server.core.policy import Policy
from extauthz_server.core.request import host_without_port
from extauthz_server.core.route_index import ShadowIndex
from extauthz_server.core.routes import HostMatcher, PathKind, PathMatcher, Route

SEGMENTS = ["a", "b", "ab"]
HOSTS = [None, "h.example.com", "*.example.com", "*.h.example.com", "other"]
REQUEST_HOSTS = ["h.example.com", "x.h.example.com", "example.com", "a.b.example.com", "other:8080"]
METHODS = ["GET", "POST", "PUT"]


def reference_match(
    routes: Sequence[Route], host: str, path: str, method: str
) -> tuple[Route, Mapping[str, str]] | None:
    """Today's meaning, written plainly: every route in order, first match wins, and a route
    matching host and path but not the method ends the search (unless a later route for the
    same host and path lists the method)."""
    bare_host = host_without_port(host)
    owner: Route | None = None
    for route in routes:
        if owner is not None and (route.path, route.host) != (owner.path, owner.host):
            continue
        if route.host is not None and not route.host.matches(bare_host):
            continue
        if route.path.kind is PathKind.TEMPLATE:
            assert route.path.template is not None
            captures = route.path.template.match(path)
        else:
            captures = {} if route.path.matches(path) else None
        if captures is None:
            continue
        if route.methods is None or method in route.methods:
            return route, dict(captures)
        owner = owner or route
    return None


def reference_first_shadowing(earlier: Sequence[Route], later: Route) -> Route | None:
    return next((route for route in earlier if route.shadows(later)), None)


@st.composite
def path_patterns(draw: st.DrawFn) -> PathMatcher:
    kind = draw(st.sampled_from(list(PathKind)))
    count = draw(st.integers(0, 3))
    segments = [draw(st.sampled_from(SEGMENTS)) for _ in range(count)]
    if kind is PathKind.GLOB:
        segments = [
            draw(st.sampled_from([segment, "*", "**", segment + "*"])) for segment in segments
        ] or ["**"]
    if kind is PathKind.TEMPLATE:
        operators = []
        for index, segment in enumerate(segments):
            choice = draw(st.sampled_from([segment, segment, "*", f"{{v{index}}}"]))
            operators.append(choice)
        if draw(st.booleans()):
            operators.append(draw(st.sampled_from(["**", "{rest=**}"])))
        segments = operators
    pattern = "/" + "/".join(segments)
    if kind in (PathKind.EXACT, PathKind.PREFIX) and segments and draw(st.booleans()):
        pattern += "/"
    return PathMatcher.compile(kind, pattern)


@st.composite
def routes(draw: st.DrawFn) -> list[Route]:
    count = draw(st.integers(0, 12))
    found = []
    for position in range(count):
        host = draw(st.sampled_from(HOSTS))
        methods = draw(st.none() | st.frozensets(st.sampled_from(METHODS), min_size=1))
        found.append(
            Route(
                name=f"r{position}",
                path=draw(path_patterns()),
                host=HostMatcher(host) if host is not None else None,
                methods=methods,
            )
        )
    return found


@st.composite
def request_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from([*SEGMENTS, "x"]), max_size=4))
    trailing = draw(st.booleans())
    return "/" + "/".join(segments) + ("/" if trailing and segments else "")


@settings(max_examples=600, deadline=None)
@given(
    routes(),
    st.lists(
        st.tuples(st.sampled_from(REQUEST_HOSTS), request_paths(), st.sampled_from(METHODS)),
        min_size=1,
        max_size=8,
    ),
)
def test_the_index_finds_what_a_linear_scan_finds(
    route_list: list[Route], requests: list[tuple[str, str, str]]
) -> None:
    policy = Policy.of(route_list)

    for host, path, method in requests:
        found = policy.match(host, path, method)
        expected = reference_match(route_list, host, path, method)
        got = (found.route, dict(found.params)) if found is not None else None
        assert got == expected, (host, path, method)


@settings(max_examples=600, deadline=None)
@given(routes())
def test_the_shadow_index_finds_the_first_shadowing_route_as_a_pairwise_check(
    route_list: list[Route],
) -> None:
    index = ShadowIndex()
    for position, route in enumerate(route_list):
        assert index.first_shadowing(route) is reference_first_shadowing(
            route_list[:position], route
        )
        index.add(route)
