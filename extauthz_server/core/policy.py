"""Route policy: an ordered list of routes, first match wins, no match denies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from extauthz_server.core.path_template import NO_CAPTURES
from extauthz_server.core.request import host_without_port
from extauthz_server.core.route_index import RouteIndex
from extauthz_server.core.routes import Route


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    # The path template's captures (empty for the other kinds of path).
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Policy:
    routes: tuple[Route, ...]
    _index: RouteIndex = field(init=False, repr=False, compare=False)
    # A match without captures is the same object every time: no allocation per Check.
    _bare: tuple[RouteMatch, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", RouteIndex(self.routes))
        object.__setattr__(
            self, "_bare", tuple(RouteMatch(route, NO_CAPTURES) for route in self.routes)
        )

    @classmethod
    def of(cls, routes: Iterable[Route]) -> Policy:
        return cls(tuple(routes))

    @property
    def reads_claims(self) -> bool:
        """Whether a route's condition may read `identity.claims`."""
        return any(r.condition is not None and r.condition.reads_claims for r in self.routes)

    def match(self, host: str, path: str, method: str) -> RouteMatch | None:
        """The first route matching host, normalised path and method; `host` may carry a port.

        A route that matches the host and path but not the method ends the search unless a
        later route for the same host and path lists the method: `PATCH /admin` must not
        fall through from a GET/POST-only `/admin` route to a broader `/` route.
        """
        bare_host = host_without_port(host)
        parts = path[1:].split("/")
        routes = self.routes
        owner: Route | None = None
        for position in self._index.candidates(bare_host, parts):
            route = routes[position]
            if owner is not None and (route.path, route.host) != (owner.path, owner.host):
                continue
            if route.host is not None and not route.host.matches(bare_host):
                continue
            params = route.path.captures(path, parts)
            if params is None:
                continue
            if route.methods is None or method in route.methods:
                return RouteMatch(route, params) if params else self._bare[position]
            owner = owner or route
        return None
