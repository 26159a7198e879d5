"""Keycloak Authorization Services as a route's decision: what a route asks (one resource and
one scope, named from the path's captures or by the request path itself, and the method), the
answers, and the seam to the part that asks Keycloak."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from extauthz_server.core.identity import Identity
from extauthz_server.core.role_templates import RoleTemplate

# The scope of a route whose `permission.scope` is one name for every method.
EVERY_METHOD = "*"
# What stays as it is when a normalised (decoded) path goes to Keycloak as a resource URI:
# `#` and `%` must not, or the path could end the resource early or mean another one.
_URI_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class PermissionAnswer(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    # Keycloak found the user's token invalid (expired, logged out, forged).
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - an answer, not a secret
    # Keycloak does not know the resource, scope or audience: our route table is wrong.
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True, slots=True)
class PermissionQuery:
    """One `resource#scope` to ask about. By URI, the resource is the request path, which
    Keycloak matches against the URIs its resources declare."""

    resource: str
    scope: str
    by_uri: bool = False

    @property
    def pair(self) -> str:
        return f"{self.resource}#{self.scope}"


@dataclass(frozen=True, slots=True)
class GrantedPermissions:
    """Everything Keycloak granted a token (its `permissions` response mode): each resource,
    by name and by id, with its granted scopes. Nothing listed means nothing granted."""

    scopes_by_resource: Mapping[str, frozenset[str]]

    def answer_for(self, query: PermissionQuery) -> PermissionAnswer:
        granted = self.scopes_by_resource.get(query.resource, frozenset())
        return PermissionAnswer.GRANTED if query.scope in granted else PermissionAnswer.DENIED


@dataclass(frozen=True, slots=True)
class RoutePermission:
    """`routes[].permission`: what to ask Keycloak for on this route."""

    # None with by_uri: the request path is the resource.
    resource: RoleTemplate | None
    # Method → scope; EVERY_METHOD for one scope whatever the method.
    scopes: Mapping[str, str]

    @property
    def by_uri(self) -> bool:
        return self.resource is None

    def scope_for(self, method: str) -> str | None:
        """The scope this method needs; None when the route names none for it (a deny)."""
        return self.scopes.get(method, self.scopes.get(EVERY_METHOD))

    def query_for(
        self, method: str, params: Mapping[str, str], path: str
    ) -> PermissionQuery | None:
        """The query for one request (`path` normalised); None for a method without a scope."""
        scope = self.scope_for(method)
        if scope is None:
            return None
        if self.resource is None:
            return PermissionQuery(quote(path, safe=_URI_PATH_SAFE), scope, by_uri=True)
        return PermissionQuery(self.resource.render(params), scope)


class PermissionSource(Protocol):
    async def decide(
        self,
        token: str,
        identity: Identity,
        query: PermissionQuery,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        """Keycloak's answer to `query` for the token's user. Raises ProviderError when there
        is no answer (unreachable, slow, our credentials refused)."""
        ...
