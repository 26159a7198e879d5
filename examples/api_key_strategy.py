"""A strategy of your own: static API keys for machine clients, the provider for the rest.

    provider:
      issuer: https://sso.example.com/realms/demo
      client_id: ext-authz
      client_secret_file: /run/secrets/ext-authz
      strategy: examples.api_key_strategy:ApiKeysOrKeycloak
      strategy_options:
        keys_file: /etc/extauthz/api-keys.json

The keys file maps the SHA-256 (hex) of each key to who it is and which provider roles it
carries, so the file holds no usable secret:

    {"9f86d0…": {"subject": "billing-batch", "roles": ["manager"]}}

Any other token goes to the provider's built-in strategy (jwt_then_introspection when the
provider has JWT rules for it, else introspection). The resolver caches what `identify`
returns, per token, like any strategy's answer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from extauthz_server.plugin import (
    ConfigError,
    Identity,
    IdentityStrategy,
    Inactive,
    StrategyContext,
)

API_KEY_PREFIX = "ak_"


class ApiKeysOrKeycloak:
    def __init__(self, context: StrategyContext) -> None:
        keys_file = context.options.get("keys_file")
        if not isinstance(keys_file, str):
            raise ConfigError("provider.strategy_options.keys_file", "expected a file name")
        self._identities = _load(Path(keys_file))
        self._provider: IdentityStrategy = (
            context.jwt_then_introspection()
            if context.provider.jwt.complete_when_claims
            else context.introspection()
        )

    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        if not token.startswith(API_KEY_PREFIX):
            return await self._provider.identify(token, timeout_s)
        identity = self._identities.get(hashlib.sha256(token.encode()).hexdigest())
        return identity if identity is not None else Inactive.NOT_ACTIVE


def _load(path: Path) -> dict[str, Identity]:
    key = "provider.strategy_options.keys_file"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(key, "expected a JSON object of key digests")
    identities: dict[str, Identity] = {}
    for digest, entry in document.items():
        subject = entry.get("subject") if isinstance(entry, dict) else None
        roles = entry.get("roles", []) if isinstance(entry, dict) else None
        if not isinstance(subject, str) or not isinstance(roles, list):
            raise ConfigError(key, f"entry {digest[:12]}… needs a subject and a list of roles")
        identities[digest] = Identity(
            subject=subject,
            username=None,
            email=None,
            client_id=subject,
            scopes=frozenset(),
            provider_roles=frozenset(str(role) for role in roles),
            expires_at=None,
        )
    return identities
