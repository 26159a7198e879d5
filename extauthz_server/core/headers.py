"""Identity headers for the upstream, and every client copy of them removed (anti-smuggling)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from extauthz_server.core.decision import Header
from extauthz_server.core.identity import Identity


@dataclass(frozen=True, slots=True)
class HeaderNames:
    subject: str = "x-auth-subject"
    username: str = "x-auth-username"
    email: str = "x-auth-email"
    roles: str = "x-auth-roles"
    client: str = "x-auth-client"
    strip_authorization: bool = False

    @property
    def identity_headers(self) -> tuple[str, ...]:
        return (self.subject, self.username, self.email, self.roles, self.client)


_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_safe(value: str) -> bool:
    return _UNSAFE_IN_HEADER.search(value) is None


@dataclass(frozen=True, slots=True)
class UpstreamHeaders:
    to_set: tuple[Header, ...]
    to_remove: tuple[str, ...]


def upstream_headers(
    names: HeaderNames, identity: Identity | None, roles: frozenset[str]
) -> UpstreamHeaders:
    """Identity headers to set on the upstream request, and the configured ones to remove.

    Every configured identity header that is not set is removed, whether or not the client
    sent it, so a client can never pass its own `x-auth-roles` to the upstream. A value with
    control characters is dropped rather than sent.
    """
    values: dict[str, str | None] = dict.fromkeys(names.identity_headers)
    if identity is not None:
        values[names.subject] = identity.subject
        values[names.username] = identity.username
        values[names.email] = identity.email
        values[names.roles] = ",".join(sorted(roles)) or None
        values[names.client] = identity.client_id
    to_set = tuple((name, value) for name, value in values.items() if value and _header_safe(value))
    set_names = {name for name, _ in to_set}
    to_remove = [name for name in names.identity_headers if name not in set_names]
    if names.strip_authorization:
        to_remove.append("authorization")
    return UpstreamHeaders(to_set=to_set, to_remove=tuple(to_remove))
