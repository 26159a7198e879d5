"""The exception hierarchy. Expected outcomes (bad tokens, missing roles) are values, not these.

ExtAuthzError
├── ConfigError              bad configuration, raised at load time only
├── ProviderError            the identity provider could not give an answer
│   ├── ProviderUnavailable      timeout, connection error, 5xx, malformed body
│   │   └── PermissionsUnavailable   the permissions API (or its token) gave no answer
│   └── ProviderRejectedClient   the provider refused *our* client credentials
├── CacheError               a cache backend failed (caught inside the cache modules)
└── ReplayCheckUnavailable   a DPoP proof's jti cannot be checked for reuse (fails closed)
"""

from __future__ import annotations


class ExtAuthzError(Exception):
    """Base of every error this package raises on purpose."""

    code = "internal_error"


class ConfigError(ExtAuthzError):
    """A configuration value is missing, of the wrong type, or contradicts another one."""

    code = "config_error"

    def __init__(self, key_path: str, problem: str) -> None:
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{key_path}: {problem}" if key_path else problem)


class ProviderError(ExtAuthzError):
    """The identity provider gave no usable answer; the request must fail closed."""

    code = "provider_error"


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"


class PermissionsUnavailable(ProviderUnavailable):
    """The remote permissions API, or the token to call it with, could not be had."""

    code = "permissions_unavailable"


class PermissionsTimedOut(PermissionsUnavailable):
    """The permissions API did not answer within the time the call was given."""


class ProviderRejectedClient(ProviderError):
    """Our own client credentials (or request) were refused: a misconfiguration, not a bad token."""

    code = "provider_rejected_client"


class CacheError(ExtAuthzError):
    code = "cache_error"


class ReplayCheckUnavailable(ExtAuthzError):
    """Whether a DPoP proof was used before cannot be told (the shared store does not answer,
    or the in-process one is full): the request is refused, never let through."""

    code = "replay_check_unavailable"
