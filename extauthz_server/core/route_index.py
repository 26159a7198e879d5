"""The routes compiled for lookup: a request's candidates are found without looking at every
route, so a match costs about the same at ten routes and at a hundred thousand.

Hosts are hashed (exact names, wildcard suffixes, and routes for any host); paths go into a
segment trie (literal segments, then single-segment captures, then routes that cover a whole
subtree: prefixes, `**`, globs at their literal prefix). A lookup collects every route whose
host and path *may* match, in configuration order; `Policy` then applies the routes' own
matchers to those few, so first-match-wins and the method rule keep their meaning exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from extauthz_server.core.path_template import SegmentKind
from extauthz_server.core.routes import HostMatcher, PathKind, PathMatcher, Route


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    # A single non-empty segment of any text (a template's `*` or `{name}`).
    one: _Node | None = None
    # Routes whose path may end exactly here.
    here: list[int] = field(default_factory=list)
    # Routes that may match here and anywhere below.
    below: list[int] = field(default_factory=list)

    def child(self, segment: str) -> _Node:
        node = self.children.get(segment)
        if node is None:
            node = self.children[segment] = _Node()
        return node

    def any_segment(self) -> _Node:
        if self.one is None:
            self.one = _Node()
        return self.one


class _PathTrie:
    def __init__(self) -> None:
        self._root = _Node()

    def add(self, position: int, matcher: PathMatcher) -> None:
        node = self._root
        if matcher.template is not None:
            for operator in matcher.template.segments:
                if operator.kind is SegmentKind.REST:
                    node.below.append(position)
                    return
                node = (
                    node.child(operator.text or "")
                    if operator.kind is SegmentKind.LITERAL
                    else node.any_segment()
                )
            node.here.append(position)
            return
        segments = matcher.pattern[1:].split("/")
        if matcher.kind is PathKind.EXACT:
            for segment in segments:
                node = node.child(segment)
            node.here.append(position)
            return
        if matcher.kind is PathKind.PREFIX:
            # `/admin/` covers what lies under `/admin`; the route's matcher refines it.
            if segments and not segments[-1]:
                segments.pop()
        else:
            # A glob is filed under the literal segments before its first `*`.
            literal: list[str] = []
            for segment in segments:
                if "*" in segment:
                    break
                literal.append(segment)
            segments = literal
        for segment in segments:
            node = node.child(segment)
        node.below.append(position)

    def collect(self, parts: Sequence[str], into: list[int]) -> None:
        frontier = [self._root]
        for part in parts:
            following: list[_Node] = []
            for node in frontier:
                if node.below:
                    into.extend(node.below)
                literal = node.children.get(part)
                if literal is not None:
                    following.append(literal)
                if node.one is not None and part:
                    following.append(node.one)
            if not following:
                return
            frontier = following
        for node in frontier:
            into.extend(node.below)
            into.extend(node.here)


class RouteIndex:
    def __init__(self, routes: Sequence[Route]) -> None:
        self._any_host = _PathTrie()
        self._exact_hosts: dict[str, _PathTrie] = {}
        # `*.example.com` is filed under `.example.com`.
        self._wildcard_hosts: dict[str, _PathTrie] = {}
        for position, route in enumerate(routes):
            self._trie_for(route).add(position, route.path)

    def _trie_for(self, route: Route) -> _PathTrie:
        if route.host is None:
            return self._any_host
        pattern = route.host.pattern
        if pattern.startswith("*."):
            return self._wildcard_hosts.setdefault(pattern[1:], _PathTrie())
        return self._exact_hosts.setdefault(pattern, _PathTrie())

    def candidates(self, host: str, parts: Sequence[str]) -> list[int]:
        """Positions, ascending, of every route whose host and path may match (and maybe a
        few more); `host` is bare (no port), `parts` the normalised path split on '/'."""
        found: list[int] = []
        self._any_host.collect(parts, found)
        exact = self._exact_hosts.get(host)
        if exact is not None:
            exact.collect(parts, found)
        if self._wildcard_hosts:
            dot = host.find(".", 1)
            while dot != -1:
                trie = self._wildcard_hosts.get(host[dot:])
                if trie is not None:
                    trie.collect(parts, found)
                dot = host.find(".", dot + 1)
        if len(found) > 1:
            found = sorted(set(found))
        return found


class ShadowIndex:
    """Earlier routes, filed by host and path so that the few that could shadow a later route
    are found without comparing it to every one of them (`Route.shadows` still decides)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        # Filed under (host, key): a route can only shadow routes of its own host, or of any
        # host when it has none.
        self._catch_alls: dict[HostMatcher | None, list[int]] = {}
        self._by_path: dict[tuple[HostMatcher | None, PathMatcher], list[int]] = {}
        self._prefixes: dict[tuple[HostMatcher | None, str], list[int]] = {}

    def first_shadowing(self, later: Route) -> Route | None:
        """The first earlier route that takes every request `later` could match."""
        for position in sorted(set(self._candidates(later))):
            earlier = self._routes[position]
            if earlier.shadows(later):
                return earlier
        return None

    def add(self, route: Route) -> None:
        position = len(self._routes)
        self._routes.append(route)
        host, path = route.host, route.path
        if path.is_catch_all:
            self._catch_alls.setdefault(host, []).append(position)
        self._by_path.setdefault((host, path), []).append(position)
        if path.kind is PathKind.PREFIX:
            self._prefixes.setdefault((host, path.pattern), []).append(position)

    def _candidates(self, later: Route) -> Iterator[int]:
        hosts = (None,) if later.host is None else (None, later.host)
        for host in hosts:
            yield from self._catch_alls.get(host, ())
            yield from self._by_path.get((host, later.path), ())
        if later.path.kind not in (PathKind.EXACT, PathKind.PREFIX):
            return
        pattern = later.path.pattern
        ends = [pattern.find("/")]
        while ends[-1] != -1:
            ends.append(pattern.find("/", ends[-1] + 1))
        for host in hosts:
            for end in ends[:-1]:
                yield from self._prefixes.get((host, pattern[:end]), ())
                yield from self._prefixes.get((host, pattern[: end + 1]), ())
            yield from self._prefixes.get((host, pattern), ())
