"""The seed configuration from the README, pointed at a given provider, for tests."""

from __future__ import annotations

from typing import Any

import yaml

from extauthz_server.config.model import Config, parse_config

DEMO_CLIENT_SECRET = "extauthzdemosecret0123456789abcd"

SEED_ROUTES: list[dict[str, Any]] = [
    {"name": "health", "path_prefix": "/healthz", "public": True},
    {"name": "public", "path_prefix": "/public", "public": True},
    {
        "name": "admin",
        "path_prefix": "/admin",
        "methods": ["GET", "POST", "PUT", "DELETE"],
        "any_of": ["admin", "platformAdmin"],
    },
    {"name": "forms", "path_prefix": "/api/forms", "any_of": ["creator", "admin"]},
    {"name": "default", "path_prefix": "/", "any_of": []},
]


# Generous on purpose: a loaded 2-core CI host can stall a fresh server's first Check for
# more than 150 ms, which then reads as a provider timeout. Tests about timeouts set their own.
PROVIDER_TIMEOUT_MS = 2000


def seed_config_text(
    issuer: str,
    *,
    client_secret: str = DEMO_CLIENT_SECRET,
    introspection_endpoint: str | None = None,
    timeout_ms: int = PROVIDER_TIMEOUT_MS,
    ttl_seconds: float = 60,
    auth_method: str = "client_secret_basic",
    server: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    role_mapping: dict[str, list[str]] | None = None,
) -> str:
    """The seed configuration as YAML; the dict options add or replace keys of a section."""
    document: dict[str, Any] = {
        "server": {"grpc_listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0", "grace_period_s": 2}
        | (server or {}),
        "provider": {
            "issuer": issuer,
            "introspection_endpoint": introspection_endpoint,
            "client_id": "ext-authz",
            "client_secret": client_secret,
            "auth_method": auth_method,
            "timeout_ms": timeout_ms,
        }
        | (provider or {}),
        "roles": {
            "claims": ["realm_access.roles", "resource_access.{client_id}.roles"],
            "mapping": {
                "admin": ["admin"],
                "manager": ["creator"],
                "org manager": ["platformAdmin"],
            }
            | (role_mapping or {}),
            "pass_through_unmapped": False,
        },
        "cache": {"ttl_seconds": ttl_seconds, "max_entries": 1000} | (cache or {}),
        "headers": {
            "subject": "x-auth-subject",
            "username": "x-auth-username",
            "email": "x-auth-email",
            "roles": "x-auth-roles",
            "client": "x-auth-client",
            "strip_authorization": False,
        },
        "routes": SEED_ROUTES if routes is None else routes,
    }
    if logging:
        document["logging"] = logging
    return yaml.safe_dump(document, sort_keys=False)


def seed_config(issuer: str, **options: Any) -> Config:
    """The seed configuration parsed as the server would; options as for seed_config_text."""
    return parse_config(seed_config_text(issuer, **options), {})
