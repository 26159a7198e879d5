"""Settings of the remote permissions API (`provider.permissions`), and the pure parts of a
call: the request URL from its template, the names in the answer. `config.permissions`
reads and validates the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from extauthz_server.core.secret import Secret
from extauthz_server.metadata.circuit_breaker import BreakerSettings

# What a URL template may name: the identity's subject, username and client.
PLACEHOLDERS = ("sub", "username", "client_id")


class RequestMethod(StrEnum):
    GET = "GET"
    POST = "POST"  # sends {"sub", "username", "client_id"} as a JSON body


class FailurePolicy(StrEnum):
    DENY = "deny"  # the check fails closed (503)
    IGNORE = "ignore"  # the identity goes on with its provider roles only


@dataclass(frozen=True, slots=True)
class NoAuth:
    pass


@dataclass(frozen=True, slots=True)
class BearerAuth:
    token: Secret


@dataclass(frozen=True, slots=True)
class ClientCredentialsAuth:
    """A token from the provider's token endpoint, with the provider's client credentials."""

    token_endpoint: str | None  # None: from discovery
    scope: str | None


ApiAuth = NoAuth | BearerAuth | ClientCredentialsAuth


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    """A URL with `{sub}`, `{username}`, `{client_id}` placeholders, split once at load."""

    text: str
    # (literal text, placeholder after it or None), in order.
    parts: tuple[tuple[str, str | None], ...]

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.parts if name is not None)

    def render(self, values: Mapping[str, str | None]) -> str | None:
        """The URL, each value percent-encoded as one path segment; None if a value the
        template needs is missing."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = values.get(name)
                if not value:
                    return None
                out.append(_segment(value))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class PermissionsSettings:
    url: UrlTemplate
    method: RequestMethod
    auth: ApiAuth
    timeout_s: float
    # Path to the names in the JSON answer; () is the answer itself.
    roles_path: tuple[str, ...]
    ttl_s: float
    on_failure: FailurePolicy
    max_entries: int
    circuit_breaker: BreakerSettings

    @property
    def request_fields(self) -> tuple[str, ...]:
        """The identity fields a request carries (and so the fields its answer may depend on)."""
        return PLACEHOLDERS if self.method is RequestMethod.POST else self.url.placeholders


def read_names(document: object, path: tuple[str, ...]) -> frozenset[str] | None:
    """The names at `path`: a list of strings, or one space-separated string. None when the
    answer does not have that shape (a list with anything but strings included)."""
    node = document
    for segment in path:
        if not isinstance(node, dict):
            return None
        node = node.get(segment)
    if isinstance(node, str):
        return frozenset(node.split())
    if isinstance(node, list) and all(isinstance(item, str) for item in node):
        return frozenset(item for item in node if item)
    return None


def _segment(value: str) -> str:
    encoded = quote(value, safe="")
    # A bare "." or ".." would be a dot-segment that walks up the API's path (RFC 3986 §5.2.4).
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded
