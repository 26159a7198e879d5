"""Keycloak Authorization Services as a route's decision: what a route asks (one resource and
one scope, named from the path's captures and the method), the answers, and the seam to the
part that asks Keycloak."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from extauthz_server.core.identity import Identity
from extauthz_server.core.role_templates import RoleTemplate

# The scope of a route whose `permission.scope` is one name for every method.
EVERY_METHOD = "*"


class PermissionAnswer(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    # Keycloak found the user's token invalid (expired, logged out, forged).
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - an answer, not a secret
    # Keycloak does not know the resource, scope or audience: our route table is wrong.
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True, slots=True)
class RoutePermission:
    """`routes[].permission`: `resource#scope` to ask Keycloak for, on this route."""

    resource: RoleTemplate
    # Method → scope; EVERY_METHOD for one scope whatever the method.
    scopes: Mapping[str, str]

    def scope_for(self, method: str) -> str | None:
        """The scope this method needs; None when the route names none for it (a deny)."""
        return self.scopes.get(method, self.scopes.get(EVERY_METHOD))

    def resource_for(self, params: Mapping[str, str]) -> str:
        return self.resource.render(params)


class PermissionSource(Protocol):
    async def decide(
        self,
        token: str,
        identity: Identity,
        resource: str,
        scope: str,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        """Keycloak's answer for `resource#scope` and the token's user. Raises ProviderError
        when there is no answer (unreachable, slow, our credentials refused)."""
        ...
