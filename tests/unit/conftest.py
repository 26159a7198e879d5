"""Fixtures for the pure-core unit tests: the seed configuration and Keycloak samples."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from extauthz_server.config.model import Config, parse_config

DATA_DIR = Path(__file__).parent / "data"

# The configuration the project ships as its example; every test that needs settings builds
# them from this text, so the seed stays parseable and its policy stays what tests expect.
SEED_CONFIG = """\
server: {grpc_listen: "127.0.0.1:0", http_listen: "127.0.0.1:0"}
provider:
  issuer: "http://127.0.0.1:8080/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
  auth_method: client_secret_basic
  timeout_ms: 150
roles:
  claims: ["realm_access.roles", "resource_access.{client_id}.roles"]
  mapping: {admin: [admin], manager: [creator], "org manager": [platformAdmin]}
  pass_through_unmapped: false
cache: {ttl_seconds: 60, max_entries: 100000}
headers:
  subject: x-auth-subject
  username: x-auth-username
  email: x-auth-email
  roles: x-auth-roles
  client: x-auth-client
  strip_authorization: false
routes:
  - {name: health, path_prefix: /healthz, public: true}
  - name: admin
    path_prefix: /admin
    methods: [GET, POST, PUT, DELETE]
    any_of: [admin, platformAdmin]
  - {name: forms, path_prefix: /api/forms, any_of: [creator, admin]}
  - {name: default, path_prefix: /, any_of: []}
"""

# Between `iat` and `exp` of the Keycloak samples in data/.
SAMPLE_NOW = 1767225700.0


@pytest.fixture(scope="session")
def seed_yaml() -> str:
    return SEED_CONFIG


@pytest.fixture(scope="session")
def seed_config() -> Config:
    return parse_config(SEED_CONFIG, {})


@pytest.fixture(scope="session")
def introspection_sample() -> Callable[[str], dict[str, object]]:
    """Load `data/introspection-<name>.json`, a fresh dict each call."""

    def load(name: str) -> dict[str, object]:
        document = json.loads((DATA_DIR / f"introspection-{name}.json").read_text("utf-8"))
        assert isinstance(document, dict)
        return document

    return load
