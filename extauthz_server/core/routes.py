"""Routes: where a route applies (host, path matcher, methods) and what it requires."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from extauthz_server.core.conditions import Condition
from extauthz_server.core.path_template import NO_CAPTURES, PathTemplate, SegmentKind
from extauthz_server.core.permissions import RoutePermission
from extauthz_server.core.role_templates import RoleTemplate


class PathKind(enum.Enum):
    EXACT = "path"
    PREFIX = "path_prefix"
    GLOB = "path_glob"
    TEMPLATE = "path_template"


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: PathKind
    pattern: str
    regex: re.Pattern[str] | None = None
    template: PathTemplate | None = None

    @classmethod
    def compile(cls, kind: PathKind, pattern: str) -> PathMatcher:
        """Raises ValueError (a TemplateError for templates) naming what is wrong."""
        if kind is PathKind.TEMPLATE:
            return cls(kind=kind, pattern=pattern, template=PathTemplate.parse(pattern))
        if not pattern.startswith("/"):
            raise ValueError("must start with '/'")
        regex = _glob_to_regex(pattern) if kind is PathKind.GLOB else None
        return cls(kind=kind, pattern=pattern, regex=regex)

    def captures(self, path: str, parts: Sequence[str]) -> Mapping[str, str] | None:
        """None when `path` does not match; else a template's captures (empty for the other
        kinds). `parts` is `path` without its leading '/', split on '/'."""
        if self.template is not None:
            return self.template.match_parts(parts)
        return NO_CAPTURES if self.matches(path) else None

    def matches(self, path: str) -> bool:
        if self.template is not None:
            return self.template.match(path) is not None
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
        if self.template is not None:
            [first, *rest] = self.template.segments
            return not rest and first.kind is SegmentKind.REST
        if self.kind is PathKind.GLOB:
            return self.pattern == "/**"
        return self.kind is PathKind.PREFIX and self.pattern == "/"

    def covers(self, other: PathMatcher) -> bool:
        """Whether every path `other` matches is matched here too (decided where it is cheap
        to be sure; `False` means "not known to cover")."""
        if self.is_catch_all or self == other:
            return True
        if self.kind is not PathKind.PREFIX or other.kind in (PathKind.GLOB, PathKind.TEMPLATE):
            return False
        # An exact path or a prefix inside this prefix: `/api` covers `/api/forms`.
        return self.matches(other.pattern) and (
            other.kind is PathKind.EXACT
            or self.pattern.endswith("/")
            or other.pattern != self.pattern
        )


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
    # Only tokens of this provider are accepted here; None: the token's issuer decides.
    provider: str | None = None
    # Required roles named from the path template's captures (`manager:{region}`).
    any_of_scoped: tuple[RoleTemplate, ...] = ()
    all_of_scoped: tuple[RoleTemplate, ...] = ()
    # `when`: decided after the roles and scopes pass; None: no condition.
    condition: Condition | None = field(default=None, compare=False)
    # `permission`: Keycloak Authorization Services decides last; None: not asked.
    permission: RoutePermission | None = None

    @property
    def scoped(self) -> bool:
        """Whether what the route requires depends on the path's captures."""
        return bool(self.any_of_scoped or self.all_of_scoped)

    def matches(self, host: str, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.matches_location(host, path)

    def matches_location(self, host: str, path: str) -> bool:
        """Host and path match, whatever the method."""
        if self.host is not None and not self.host.matches(host):
            return False
        return self.path.matches(path)

    def permits(
        self,
        roles: frozenset[str],
        scopes: frozenset[str],
        params: Mapping[str, str] = NO_CAPTURES,
    ) -> bool:
        """Whether an authenticated caller with these internal roles and scopes may pass, on
        a path whose template captured `params`."""
        any_of, all_of = (self.required(params)) if self.scoped else (self.any_of, self.all_of)
        if any_of and any_of.isdisjoint(roles):
            return False
        return all_of <= roles and self.scopes <= scopes

    def required(self, params: Mapping[str, str]) -> tuple[frozenset[str], frozenset[str]]:
        """`any_of` and `all_of` with the scoped roles named for these captures."""
        return (
            self.any_of.union(role.render(params) for role in self.any_of_scoped),
            self.all_of.union(role.render(params) for role in self.all_of_scoped),
        )

    def shadows(self, later: Route) -> bool:
        """Whether every request `later` could match is already taken by this route."""
        if self.host is not None and self.host != later.host:
            return False
        if self.methods is not None and (
            later.methods is None or not later.methods <= self.methods
        ):
            return False
        return self.path.covers(later.path)
