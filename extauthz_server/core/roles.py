"""Provider roles: read from claim paths in the introspection document, mapped to internal roles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from extauthz_server.core.role_templates import RolePattern

DEFAULT_ROLE_CLAIMS = ("realm_access.roles", "resource_access.{client_id}.roles")


@dataclass(frozen=True, slots=True)
class ClaimPath:
    """A dotted path into a JSON document, split before `{client_id}` is substituted.

    Splitting first keeps a client id that contains dots (common in Keycloak) one segment.
    """

    text: str
    segments: tuple[str, ...]

    @classmethod
    def compile(cls, template: str, client_id: str) -> ClaimPath:
        segments = tuple(part.replace("{client_id}", client_id) for part in template.split("."))
        return cls(text=template, segments=segments)


def read_roles(document: Mapping[str, object], paths: Iterable[ClaimPath]) -> frozenset[str]:
    """Role names at every path: a list of strings, or a space-separated string (`scope`)."""
    roles: set[str] = set()
    for path in paths:
        value = _lookup(document, path.segments)
        if isinstance(value, str):
            roles.update(value.split())
        elif isinstance(value, list):
            roles.update(item for item in value if isinstance(item, str) and item)
    return frozenset(roles)


def _lookup(document: Mapping[str, object], segments: tuple[str, ...]) -> object:
    node: object = document
    for segment in segments:
        if not isinstance(node, Mapping):
            return None
        node = node.get(segment)
    return node


def is_header_safe_role(name: str) -> bool:
    """Roles travel comma-separated in one header: no commas, no control characters."""
    return bool(name) and "," not in name and all(0x20 <= ord(ch) != 0x7F for ch in name)


@dataclass(frozen=True, slots=True)
class RoleMap:
    """Many-to-many table from provider role names to internal role names; a name with
    placeholders (`Manager for {region}`) maps every role of its form, scoped to the part
    it captures. An exact name wins over a pattern."""

    table: Mapping[str, frozenset[str]]
    pass_through_unmapped: bool = False
    patterns: tuple[RolePattern, ...] = ()

    def map(self, provider_roles: Iterable[str]) -> frozenset[str]:
        internal: set[str] = set()
        for role in provider_roles:
            mapped = self.table.get(role)
            if mapped is not None:
                internal.update(mapped)
            elif self.patterns and self._map_scoped(role, internal):
                continue
            elif self.pass_through_unmapped and is_header_safe_role(role):
                internal.add(role)
        return frozenset(internal)

    def _map_scoped(self, role: str, internal: set[str]) -> bool:
        matched = False
        for pattern in self.patterns:
            names = pattern.map(role)
            if names is not None:
                matched = True
                # A captured value with a comma would split the roles header: not a role.
                internal.update(name for name in names if is_header_safe_role(name))
        return matched

    @property
    def produced(self) -> frozenset[str]:
        """Every internal role the exact names can produce."""
        return frozenset().union(*self.table.values())

    @property
    def produced_skeletons(self) -> frozenset[str]:
        """The shapes (`RoleTemplate.skeleton`) of the roles the patterns can produce."""
        return frozenset(o.skeleton for pattern in self.patterns for o in pattern.outputs)
