"""The `provider:` section (one identity provider) or `providers:` (a list of them), validated.

Each provider has its own issuer, credentials, strategy, JWT rules and role claim paths.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from extauthz_server.config.permissions import parse_circuit_breaker, parse_permissions
from extauthz_server.config.reader import Section, optional_secret
from extauthz_server.core.roles import ClaimPath
from extauthz_server.core.secret import Secret
from extauthz_server.errors import ConfigError
from extauthz_server.identity.access_token import DEFAULT_ALGORITHMS, JwtRules
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.metadata.authorization_services import (
    AuthorizationServicesSettings,
    PermissionMode,
)
from extauthz_server.metadata.permissions import ClientCredentialsAuth, PermissionsSettings

INTROSPECTION = "introspection"
JWT = "jwt"
JWT_THEN_INTROSPECTION = "jwt_then_introspection"
BUILT_IN_STRATEGIES = (INTROSPECTION, JWT, JWT_THEN_INTROSPECTION)
DEFAULT_PROVIDER_NAME = "default"

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True, slots=True)
class JwtSettings:
    rules: JwtRules = field(default_factory=JwtRules)
    # jwt_then_introspection: a verified token carrying every one of these claims is taken
    # as complete, and not introspected.
    complete_when_claims: tuple[str, ...] = ()
    jwks_refetch_interval_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    issuer: str
    introspection_endpoint: str | None
    client_id: str
    client_secret: Secret | None
    auth_method: ClientAuthMethod
    timeout_s: float
    realm: str
    max_concurrency: int = 64
    logout_audiences: frozenset[str] = frozenset()
    jwks_uri: str | None = None
    name: str = DEFAULT_PROVIDER_NAME
    # A built-in name, or "package.module:Factory" for a strategy of your own.
    strategy: str = INTROSPECTION
    strategy_options: Mapping[str, object] = field(default_factory=dict)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    role_claims: tuple[ClaimPath, ...] = ()
    permissions: PermissionsSettings | None = None
    authorization_services: AuthorizationServicesSettings | None = None
    # `dpop: required`: a plain Bearer token is refused; every token must come with a DPoP
    # proof. `allowed` (the default): DPoP-bound tokens need their proof, others pass.
    dpop_required: bool = False
    # Where it was configured ("provider" or "providers[i]"), to name its keys in errors.
    config_path: str = "provider"

    def key(self, name: str) -> str:
        return f"{self.config_path}.{name}"

    @property
    def credentials(self) -> ClientCredentials | None:
        """Our client's credentials at this provider; None without a client secret."""
        if self.client_secret is None:
            return None
        return ClientCredentials(self.client_id, self.client_secret, self.auth_method)

    @property
    def introspects(self) -> bool:
        return self.strategy in (INTROSPECTION, JWT_THEN_INTROSPECTION)


def parse_providers(
    top: Section, base_dir: Path, default_role_claims: tuple[str, ...]
) -> tuple[ProviderConfig, ...]:
    """Both forms: `provider:` (a mapping) or `providers:` (a non-empty list of them)."""
    if top.has("provider") and top.has("providers"):
        raise ConfigError("providers", "give provider or providers, not both")
    if not top.has("providers"):
        return (_provider(top.section("provider"), base_dir, default_role_claims, None),)
    items = top.items("providers")
    if not items:
        raise ConfigError("providers", "expected at least one provider")
    providers: list[ProviderConfig] = []
    for index, item in enumerate(items):
        section = Section(item, f"providers[{index}]")
        provider = _provider(section, base_dir, default_role_claims, index)
        for earlier in providers:
            if earlier.name == provider.name:
                raise ConfigError(section.key("name"), f"duplicate provider name {provider.name!r}")
            if earlier.issuer == provider.issuer:
                raise ConfigError(section.key("issuer"), "another provider has this issuer")
        providers.append(provider)
    return tuple(providers)


def _url(section: Section, name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(section.key(name), f"expected an http(s) URL, got {value!r}")
    return value


def _provider(
    section: Section, base_dir: Path, default_role_claims: tuple[str, ...], index: int | None
) -> ProviderConfig:
    if index is None:
        name = section.string("name", DEFAULT_PROVIDER_NAME)
    else:
        name = section.string("name")
    if _PROVIDER_NAME.fullmatch(name) is None:
        raise ConfigError(section.key("name"), "lower-case letters, digits, - and _ only")
    issuer = _url(section, "issuer", section.string("issuer")).rstrip("/")
    endpoint = section.optional_string("introspection_endpoint")
    if endpoint is not None:
        _url(section, "introspection_endpoint", endpoint)
    jwks_uri = section.optional_string("jwks_uri")
    if jwks_uri is not None:
        _url(section, "jwks_uri", jwks_uri)
    strategy = _strategy(section)
    needs_client = strategy in (INTROSPECTION, JWT_THEN_INTROSPECTION)
    client_id = (
        section.string("client_id") if needs_client else section.optional_string("client_id")
    )
    client_id = client_id or ""
    secret = _secret(section, base_dir, required=needs_client)
    method = section.member("auth_method", ClientAuthMethod, ClientAuthMethod.CLIENT_SECRET_BASIC)
    timeout_ms = section.integer("timeout_ms", 150, 1, 60_000)
    max_concurrency = section.integer("max_concurrency", 64, 1, 10_000)
    logout_audiences = frozenset(section.string_list("logout_audiences"))
    realm = section.optional_string("realm") or urlsplit(issuer).path.rstrip("/").rsplit("/", 1)[-1]
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in realm):
        raise ConfigError(section.key("realm"), "may not contain control characters")
    role_claims = tuple(
        ClaimPath.compile(template, client_id)
        for template in section.string_list("role_claims", default_role_claims)
    )
    options = section.mapping("strategy_options")
    jwt_settings = _jwt(section.section("jwt"), strategy)
    permissions = parse_permissions(section.section("permissions"), base_dir)
    if (
        permissions is not None
        and isinstance(permissions.auth, ClientCredentialsAuth)
        and secret is None
    ):
        raise ConfigError(
            section.key("permissions"), "client_credentials auth needs the provider's client_secret"
        )
    authorization_services = _authorization_services(
        section.section("authorization_services"), secret is not None
    )
    dpop = section.choice("dpop", ("allowed", "required"), "allowed")
    section.finish()
    return ProviderConfig(
        issuer=issuer,
        introspection_endpoint=endpoint,
        client_id=client_id,
        client_secret=secret,
        auth_method=method,
        timeout_s=timeout_ms / 1000,
        realm=realm or "extauthz",
        max_concurrency=max_concurrency,
        logout_audiences=logout_audiences,
        jwks_uri=jwks_uri,
        name=name,
        strategy=strategy,
        strategy_options=MappingProxyType(dict(options)),
        jwt=jwt_settings,
        role_claims=role_claims,
        permissions=permissions,
        authorization_services=authorization_services,
        dpop_required=dpop == "required",
        config_path=section.path,
    )


def _authorization_services(
    section: Section, has_secret: bool
) -> AuthorizationServicesSettings | None:
    """`authorization_services`: None when the section is absent."""
    if not section.has("audience"):
        for key in ("audience", "mode", "timeout_ms", "circuit_breaker"):
            if section.has(key):
                raise ConfigError(section.key("audience"), "is required")
            section.raw(key)
        section.finish()
        return None
    if not has_secret:
        raise ConfigError(
            section.path, "asks Keycloak with our client's credentials: set client_secret"
        )
    audience = section.string("audience")
    mode = section.member("mode", PermissionMode, PermissionMode.DECISION)
    timeout_ms = section.integer("timeout_ms", 150, 1, 60_000)
    breaker = parse_circuit_breaker(section.section("circuit_breaker"))
    section.finish()
    return AuthorizationServicesSettings(
        audience=audience, mode=mode, timeout_s=timeout_ms / 1000, circuit_breaker=breaker
    )


def _strategy(section: Section) -> str:
    strategy = section.string("strategy", INTROSPECTION)
    if strategy in BUILT_IN_STRATEGIES:
        return strategy
    if _IMPORT_PATH.fullmatch(strategy) is None:
        choices = ", ".join(BUILT_IN_STRATEGIES)
        raise ConfigError(
            section.key("strategy"), f"expected one of {choices}, or package.module:Factory"
        )
    module_name, _, attribute = strategy.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(section.key("strategy"), f"cannot import {module_name}: {exc}") from None
    if not callable(getattr(module, attribute, None)):
        raise ConfigError(
            section.key("strategy"), f"{module_name} has no callable named {attribute}"
        )
    return strategy


def _jwt(section: Section, strategy: str) -> JwtSettings:
    algorithms = section.subset("algorithms", DEFAULT_ALGORITHMS)
    complete_when = section.string_list("complete_when_claims")
    if complete_when and strategy != JWT_THEN_INTROSPECTION:
        raise ConfigError(
            section.key("complete_when_claims"), "only used by strategy jwt_then_introspection"
        )
    settings = JwtSettings(
        rules=JwtRules(
            algorithms=algorithms,
            leeway_s=section.number("leeway_seconds", 0, 0, 300),
            audiences=frozenset(section.string_list("audiences")),
            header_types=frozenset(t.lower() for t in section.string_list("header_types")),
        ),
        complete_when_claims=complete_when,
        jwks_refetch_interval_s=section.number("jwks_refetch_interval_seconds", 10, 1, 3_600),
    )
    section.finish()
    return settings


def _secret(section: Section, base_dir: Path, *, required: bool) -> Secret | None:
    secret = optional_secret(section, "client_secret", base_dir)
    if secret is None and required:
        raise ConfigError(section.key("client_secret"), "is required (or client_secret_file)")
    return secret
