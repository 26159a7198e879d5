"""Route policy: an ordered list of routes, first match wins, no match denies."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from extauthz_server.request import host_without_port


class PathKind(enum.Enum):
    EXACT = "path"
    PREFIX = "path_prefix"
    GLOB = "path_glob"


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: PathKind
    pattern: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, kind: PathKind, pattern: str) -> PathMatcher:
        if not pattern.startswith("/"):
            raise ValueError("must start with '/'")
        regex = _glob_to_regex(pattern) if kind is PathKind.GLOB else None
        return cls(kind=kind, pattern=pattern, regex=regex)

    def matches(self, path: str) -> bool:
        if self.kind is PathKind.EXACT:
            return path == self.pattern
        if self.kind is PathKind.PREFIX:
            # Segment-aware: `/admin` covers `/admin` and `/admin/...`, never `/administrator`.
            if self.pattern.endswith("/"):
                return path.startswith(self.pattern)
            return path == self.pattern or path.startswith(self.pattern + "/")
        assert self.regex is not None  # noqa: S101 - set by compile() for globs
        return self.regex.fullmatch(path) is not None

    @property
    def is_catch_all(self) -> bool:
        return self.kind is PathKind.PREFIX and self.pattern == "/"


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches within one segment, `**` across segments."""
    parts = re.split(r"(\*\*|\*)", pattern)
    translated = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(translated)


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """An exact host, or `*.example.com` for any subdomain. Ports are ignored."""

    pattern: str

    def matches(self, host: str) -> bool:
        if self.pattern.startswith("*."):
            return host.endswith(self.pattern[1:]) and len(host) > len(self.pattern) - 1
        return host == self.pattern


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: PathMatcher
    host: HostMatcher | None = None
    methods: frozenset[str] | None = None
    public: bool = False
    any_of: frozenset[str] = frozenset()
    all_of: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    def matches(self, host: str, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.host is not None and not self.host.matches(host):
            return False
        return self.path.matches(path)

    def permits(self, roles: frozenset[str], scopes: frozenset[str]) -> bool:
        """Whether an authenticated caller with these internal roles and scopes may pass."""
        if self.any_of and self.any_of.isdisjoint(roles):
            return False
        return self.all_of <= roles and self.scopes <= scopes

    @property
    def matches_everything(self) -> bool:
        return self.host is None and self.methods is None and self.path.is_catch_all


@dataclass(frozen=True, slots=True)
class Policy:
    routes: tuple[Route, ...]

    @classmethod
    def of(cls, routes: Iterable[Route]) -> Policy:
        return cls(tuple(routes))

    def match(self, host: str, path: str, method: str) -> Route | None:
        """First route matching the normalised path; `host` may carry a port."""
        bare_host = host_without_port(host)
        for route in self.routes:
            if route.matches(bare_host, path, method):
                return route
        return None
