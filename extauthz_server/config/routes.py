"""The `routes` section: every route validated and compiled at load (path matcher, host,
methods, roles plain and scoped, condition, permission), unreachable routes refused."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType

from extauthz_server.config.providers import ProviderConfig
from extauthz_server.config.reader import Section
from extauthz_server.core.conditions import Condition, ConditionError
from extauthz_server.core.permissions import EVERY_METHOD, RoutePermission
from extauthz_server.core.policy import Policy
from extauthz_server.core.role_templates import RoleTemplate, RoleTemplateError, has_placeholder
from extauthz_server.core.roles import RoleMap
from extauthz_server.core.route_index import ShadowIndex
from extauthz_server.core.routes import HostMatcher, PathKind, PathMatcher, Route
from extauthz_server.errors import ConfigError
from extauthz_server.metadata.authorization_services import PermissionMode

_METHOD = re.compile(r"[A-Z]+")
_PATH_KINDS = tuple(PathKind)


@dataclass(frozen=True, slots=True)
class ProviderNames:
    names: frozenset[str]
    # Those with authorization_services: who can answer a route's `permission`.
    deciding: frozenset[str]
    # Those of them that ask one decision per pair, which Keycloak can also match by URI.
    deciding_by_uri: frozenset[str] = frozenset()
    # Who answers a route that names no provider: the first one with authorization_services.
    default_deciding: str | None = None

    @classmethod
    def of(cls, providers: tuple[ProviderConfig, ...]) -> ProviderNames:
        with_services = [p for p in providers if p.authorization_services is not None]
        return cls(
            frozenset(p.name for p in providers),
            frozenset(p.name for p in with_services),
            frozenset(
                p.name
                for p in with_services
                if p.authorization_services is not None
                and p.authorization_services.mode is PermissionMode.DECISION
            ),
            with_services[0].name if with_services else None,
        )


def parse_policy(top: Section, role_map: RoleMap, providers: ProviderNames) -> Policy:
    known_roles = _KnownRoles(role_map.produced, role_map.produced_skeletons)
    routes: list[Route] = []
    names: set[str] = set()
    shadows = ShadowIndex()
    for index, item in enumerate(top.items("routes")):
        section = Section(item, f"routes[{index}]")
        route = _route(section, known_roles, role_map.pass_through_unmapped, providers)
        if route.name in names:
            raise ConfigError(section.key("name"), f"duplicate route name {route.name!r}")
        names.add(route.name)
        earlier = shadows.first_shadowing(route)
        if earlier is not None:
            raise ConfigError(
                section.path,
                f"unreachable: route {earlier.name!r} before it matches every request it could",
            )
        shadows.add(route)
        routes.append(route)
    return Policy.of(routes)


def _route(
    section: Section, known_roles: _KnownRoles, pass_through: bool, providers: ProviderNames
) -> Route:
    name = section.string("name")
    kinds = [kind for kind in _PATH_KINDS if section.has(kind.value)]
    if len(kinds) != 1:
        raise ConfigError(
            section.path, "give exactly one of path, path_prefix, path_glob, path_template"
        )
    kind = kinds[0]
    for other in _PATH_KINDS:
        section.raw(other.value)
    pattern = section.string(kind.value)
    try:
        matcher = PathMatcher.compile(kind, pattern)
    except ValueError as exc:
        raise ConfigError(section.key(kind.value), str(exc)) from None
    host = section.optional_string("host")
    methods = _methods(section)
    public = section.boolean("public", False)
    captured = matcher.template.names if matcher.template is not None else ()
    any_of, any_of_scoped = _required_roles(section, "any_of", captured)
    all_of, all_of_scoped = _required_roles(section, "all_of", captured)
    scopes = frozenset(section.string_list("scopes"))
    provider = section.optional_string("provider")
    if provider is not None and provider not in providers.names:
        raise ConfigError(
            section.key("provider"), f"no provider is named {provider!r} (providers[].name)"
        )
    condition = _condition(section, public)
    permission = _permission(section, public, captured, provider, providers)
    if public and (any_of or all_of or scopes or any_of_scoped or all_of_scoped):
        raise ConfigError(section.path, "a public route cannot require roles or scopes")
    if not pass_through:
        for key, required, scoped in (
            ("any_of", any_of, any_of_scoped),
            ("all_of", all_of, all_of_scoped),
        ):
            unknown = known_roles.first_unknown(required, scoped)
            if unknown is not None:
                raise ConfigError(
                    section.key(key), f"role {unknown!r} is not produced by roles.mapping"
                )
    section.finish()
    return Route(
        name=name,
        path=matcher,
        host=HostMatcher(host.lower()) if host else None,
        methods=methods,
        public=public,
        any_of=any_of,
        all_of=all_of,
        scopes=scopes,
        provider=provider,
        any_of_scoped=any_of_scoped,
        all_of_scoped=all_of_scoped,
        condition=condition,
        permission=permission,
    )


def _permission(
    section: Section,
    public: bool,
    captured: Collection[str],
    provider: str | None,
    providers: ProviderNames,
) -> RoutePermission | None:
    """`permission: {resource: "region-{region}", scope: read | {GET: read, POST: write}}`."""
    if not section.has("permission"):
        section.raw("permission")
        return None
    key = section.key("permission")
    if public:
        raise ConfigError(key, "a public route has no caller to ask Keycloak about")
    if provider is not None and provider not in providers.deciding:
        raise ConfigError(key, f"provider {provider!r} has no authorization_services")
    if not providers.deciding:
        raise ConfigError(key, "needs a provider with authorization_services")
    spec = section.section("permission")
    if spec.boolean("by_uri", False):
        if spec.has("resource"):
            raise ConfigError(spec.key("resource"), "give either resource or by_uri: true")
        spec.raw("resource")
        answering = provider or providers.default_deciding
        if answering not in providers.deciding_by_uri:
            raise ConfigError(
                spec.key("by_uri"),
                f"provider {answering!r} asks in permissions mode, which lists resources by "
                "name only: by_uri needs authorization_services.mode: decision",
            )
        resource = None
    else:
        resource = _permission_resource(spec, captured)
    scopes = _permission_scopes(spec)
    spec.finish()
    return RoutePermission(resource, MappingProxyType(scopes))


def _permission_resource(spec: Section, captured: Collection[str]) -> RoleTemplate:
    if not spec.has("resource"):
        raise ConfigError(spec.key("resource"), "is required (or by_uri: true)")
    try:
        resource = RoleTemplate.parse(spec.string("resource"))
    except RoleTemplateError as exc:
        raise ConfigError(spec.key("resource"), str(exc)) from None
    missing = sorted(resource.names - set(captured))
    if missing:
        raise ConfigError(
            spec.key("resource"),
            f"uses {{{missing[0]}}}, which the route's path_template does not capture",
        )
    return resource


def _permission_scopes(spec: Section) -> dict[str, str]:
    value = spec.raw("scope")
    if isinstance(value, str) and value:
        return {EVERY_METHOD: value}
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            spec.key("scope"), "expected a scope name, or a mapping of methods to scope names"
        )
    scopes: dict[str, str] = {}
    for method, scope in value.items():
        name = str(method).upper()
        if _METHOD.fullmatch(name) is None or not isinstance(scope, str) or not scope:
            raise ConfigError(spec.key("scope"), f"{method!r}: expected METHOD: scope name")
        scopes[name] = scope
    return scopes


def _condition(section: Section, public: bool) -> Condition | None:
    text = section.optional_string("when")
    if text is None:
        return None
    if public:
        raise ConfigError(section.key("when"), "a public route has no caller to decide on")
    try:
        return Condition.compile(text)
    except ConditionError as exc:
        raise ConfigError(section.key("when"), str(exc)) from None


@dataclass(frozen=True, slots=True)
class _KnownRoles:
    """The internal roles the mapping can produce: names, and the shapes of scoped ones."""

    names: frozenset[str]
    skeletons: frozenset[str]

    def first_unknown(
        self, required: frozenset[str], scoped: tuple[RoleTemplate, ...]
    ) -> str | None:
        unknown = sorted(required - self.names)
        unknown += [role.text for role in scoped if role.skeleton not in self.skeletons]
        return unknown[0] if unknown else None


def _required_roles(
    section: Section, name: str, captured: Collection[str]
) -> tuple[frozenset[str], tuple[RoleTemplate, ...]]:
    """A route's `any_of` or `all_of`: plain role names, and roles scoped by the captures of
    its path template (`manager:{region}`)."""
    plain: set[str] = set()
    scoped: list[RoleTemplate] = []
    for role in section.string_list(name):
        if not has_placeholder(role):
            plain.add(role)
            continue
        try:
            template = RoleTemplate.parse(role)
        except RoleTemplateError as exc:
            raise ConfigError(section.key(name), str(exc)) from None
        missing = sorted(template.names - set(captured))
        if missing:
            raise ConfigError(
                section.key(name),
                f"{role!r} uses {{{missing[0]}}}, which the route's path_template does not capture",
            )
        scoped.append(template)
    return frozenset(plain), tuple(scoped)


def _methods(section: Section) -> frozenset[str] | None:
    if not section.has("methods"):
        section.raw("methods")
        return None
    methods = frozenset(method.upper() for method in section.string_list("methods"))
    bad = sorted(m for m in methods if _METHOD.fullmatch(m) is None)
    if bad or not methods:
        raise ConfigError(section.key("methods"), "expected a non-empty list of HTTP methods")
    return methods
