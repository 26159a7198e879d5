"""The seed configuration from the README, pointed at a given provider, for tests."""

from __future__ import annotations

from typing import Any

from extauthz_server.config import Config, parse_config

SEED_ROUTES = """
routes:
  - {name: health, path_prefix: /healthz, public: true}
  - {name: public, path_prefix: /public, public: true}
  - name: admin
    path_prefix: /admin
    methods: [GET, POST, PUT, DELETE]
    any_of: [admin, platformAdmin]
  - {name: forms, path_prefix: /api/forms, any_of: [creator, admin]}
  - {name: default, path_prefix: /, any_of: []}
"""


def seed_config_text(
    issuer: str,
    *,
    client_secret: str = "extauthzdemosecret0123456789abcd",  # noqa: S107 - demo realm secret
    introspection_endpoint: str | None = None,
    timeout_ms: int = 150,
    ttl_seconds: float = 60,
    auth_method: str = "client_secret_basic",
) -> str:
    endpoint = f'"{introspection_endpoint}"' if introspection_endpoint else "null"
    return f"""
server: {{grpc_listen: "127.0.0.1:0", http_listen: "127.0.0.1:0", grace_period_s: 2}}
provider:
  issuer: "{issuer}"
  introspection_endpoint: {endpoint}
  client_id: ext-authz
  client_secret: "{client_secret}"
  auth_method: {auth_method}
  timeout_ms: {timeout_ms}
roles:
  claims: ["realm_access.roles", "resource_access.{{client_id}}.roles"]
  mapping: {{admin: [admin], manager: [creator], "org manager": [platformAdmin]}}
  pass_through_unmapped: false
cache: {{ttl_seconds: {ttl_seconds}, max_entries: 1000}}
headers:
  subject: x-auth-subject
  username: x-auth-username
  email: x-auth-email
  roles: x-auth-roles
  client: x-auth-client
  strip_authorization: false
{SEED_ROUTES}
"""


def seed_config(issuer: str, **options: Any) -> Config:
    """The seed configuration parsed as the server would; options as for seed_config_text."""
    return parse_config(seed_config_text(issuer, **options), {})
