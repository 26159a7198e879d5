"""The one configuration model: YAML plus environment overrides, validated and compiled at load.

Environment: `${NAME}` inside any string is replaced by that variable; a variable
`EXTAUTHZ__SECTION__KEY=value` overrides `section.key` (read as YAML unless the key takes a
string, so a secret made of digits stays a string).
"""

from __future__ import annotations

import gc
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from extauthz_server.config.cpus import available_cpus
from extauthz_server.config.identity_token import parse_identity_token
from extauthz_server.config.providers import ProviderConfig, parse_providers
from extauthz_server.config.reader import EnvValue, Section, optional_secret, secret_key_path
from extauthz_server.config.routes import ProviderNames, parse_policy
from extauthz_server.config.sender import SenderConstraintsConfig, parse_sender_constraints
from extauthz_server.config.tls import TlsConfig, parse_tls
from extauthz_server.core.authorizer import ALLOWED_MEMO_SIZE, AuthorizerSettings
from extauthz_server.core.headers import HeaderNames
from extauthz_server.core.identity_token import IdentityTokenSettings
from extauthz_server.core.policy import Policy
from extauthz_server.core.role_templates import (
    RolePattern,
    RoleTemplate,
    RoleTemplateError,
    has_placeholder,
)
from extauthz_server.core.roles import DEFAULT_ROLE_CLAIMS, ClaimPath, RoleMap, is_header_safe_role
from extauthz_server.core.secret import Secret
from extauthz_server.core.tokens import DEFAULT_MAX_TOKEN_BYTES
from extauthz_server.errors import ConfigError

ENV_PREFIX = "EXTAUTHZ__"
# libyaml's safe loader where PyYAML was built with it: the same documents, parsed in C.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
# A shorter key could be guessed offline from the sealed entries anyone reading Redis sees.
MIN_SIGNING_KEY_CHARS = 32
_RESERVED_HEADERS = frozenset({"authorization", "host", "content-length", "transfer-encoding"})


MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class ServerConfig:
    grpc_listen: str = "0.0.0.0:9191"
    http_listen: str = "0.0.0.0:8181"
    # The HTTP authorization listener (Envoy http_service, nginx, Traefik, Caddy); None: off.
    http_authz_listen: str | None = None
    # Back-channel logout on a listener of its own (Keycloak must reach it, while metrics
    # stay private); None: served on http_listen.
    logout_listen: str | None = None
    grace_period_s: float = 5.0
    max_concurrent_checks: int = 1000
    workers: int = 1
    # "asyncio", or "uvloop" (the `fast` extra).
    event_loop: str = "asyncio"
    # TLS (mutual with a client CA) on the gRPC and HTTP authorization listeners; None:
    # plaintext. The ops and logout listeners stay plaintext.
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_s: float = 60.0
    negative_ttl_s: float = 10.0
    max_entries: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    stale_if_error_s: float = 0.0
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_namespace: str = "extauthz"
    redis_timeout_s: float = 0.05
    redis_max_connections: int = 64
    # Seals Redis entries; None: a key derived from each provider's client secret.
    redis_signing_key: Secret | None = None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    providers: tuple[ProviderConfig, ...]
    role_map: RoleMap
    cache: CacheConfig
    headers: HeaderNames
    policy: Policy
    max_token_bytes: int
    log_level: str
    audit_enabled: bool = True
    audit_allow_sample_rate: float = 1.0
    tracing_enabled: bool = False
    tracing_service_name: str = "extauthz-server"
    identity_token: IdentityTokenSettings | None = None
    sender: SenderConstraintsConfig = field(default_factory=SenderConstraintsConfig)

    @property
    def provider(self) -> ProviderConfig:
        """The first provider: the only one in the `provider:` form, the default otherwise."""
        return self.providers[0]

    @property
    def role_claims(self) -> tuple[ClaimPath, ...]:
        return self.provider.role_claims

    def provider_named(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


def load_config(path: Path, environ: Mapping[str, str]) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    return parse_config(text, environ, base_dir=path.parent, source=str(path))


def parse_config(
    text: str, environ: Mapping[str, str], base_dir: Path = Path(), *, source: str = "<text>"
) -> Config:
    # Loading builds a few objects per route and frees nothing: the cyclic collector would
    # rescan them all again and again (for 100,000 routes, most of the load time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise ConfigError("", f"not valid YAML: {_yaml_problem(exc, source)}") from exc
        if data is None:
            data = {}
        data = _interpolate(data, environ, "")
        data = _apply_overrides(data, environ)
        return _build(Section(data, ""), base_dir)
    finally:
        if collecting:
            gc.enable()


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    """`file:line:column: what`, instead of PyYAML's `in "<unicode string>"`."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"{source}: {problem}"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: {problem}"


def _apply_overrides(data: object, environ: Mapping[str, str]) -> object:
    if not isinstance(data, dict):
        return data
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(name, "malformed override name")
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(name, f"cannot override inside {key!r}, which is not a mapping")
            node = child
        node[keys[-1]] = EnvValue(text, name)
    return data


def _interpolate(value: object, environ: Mapping[str, str], path: str) -> object:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _build(top: Section, base_dir: Path) -> Config:
    server = _server(top.section("server"), base_dir)
    roles = top.section("roles")
    providers = parse_providers(top, base_dir, roles.string_list("claims", DEFAULT_ROLE_CLAIMS))
    if server.logout_listen is not None and not any(p.logout_audiences for p in providers):
        raise ConfigError(
            "server.logout_listen",
            "no provider accepts back-channel logouts: set provider.logout_audiences",
        )
    role_map = _role_map(roles)
    roles.finish()
    cache = _cache(top.section("cache"), base_dir)
    headers = _headers(top.section("headers"))
    identity_token = parse_identity_token(
        top.section("identity_token"), base_dir, (*headers.identity_headers, *_RESERVED_HEADERS)
    )
    limits = top.section("limits")
    max_token_bytes = limits.integer("max_token_bytes", DEFAULT_MAX_TOKEN_BYTES, 64, 1 << 20)
    limits.finish()
    logging_section = top.section("logging")
    log_level = logging_section.choice(
        "level", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
    )
    audit_enabled = logging_section.boolean("audit", True)
    audit_allow_sample_rate = logging_section.number("audit_allow_sample_rate", 1.0, 0.0, 1.0)
    logging_section.finish()
    tracing = top.section("tracing")
    tracing_enabled = tracing.boolean("enabled", False)
    tracing_service_name = tracing.string("service_name", "extauthz-server")
    tracing.finish()
    policy = parse_policy(top, role_map, ProviderNames.of(providers))
    sender = parse_sender_constraints(top.section("dpop"), top.section("mtls"))
    top.finish()
    return Config(
        server=server,
        providers=providers,
        role_map=role_map,
        cache=cache,
        headers=headers,
        policy=policy,
        max_token_bytes=max_token_bytes,
        log_level=log_level,
        audit_enabled=audit_enabled,
        audit_allow_sample_rate=audit_allow_sample_rate,
        tracing_enabled=tracing_enabled,
        tracing_service_name=tracing_service_name,
        identity_token=identity_token,
        sender=sender,
    )


def _listen_address(section: Section, name: str, default: str) -> str:
    value = section.string(name, default)
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(section.key(name), f"expected host:port, got {value!r}")
    return value


def _optional_listen_address(section: Section, name: str) -> str | None:
    if section.raw(name) is None:
        return None
    return _listen_address(section, name, "")


def _event_loop(section: Section) -> str:
    name = section.choice("event_loop", ("asyncio", "uvloop"), "asyncio")
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(
            section.key("event_loop"),
            "uvloop is not installed (pip install 'extauthz-server[fast]')",
        )
    return name


def _server(section: Section, base_dir: Path) -> ServerConfig:
    defaults = ServerConfig()
    server = ServerConfig(
        grpc_listen=_listen_address(section, "grpc_listen", defaults.grpc_listen),
        http_listen=_listen_address(section, "http_listen", defaults.http_listen),
        http_authz_listen=_optional_listen_address(section, "http_authz_listen"),
        logout_listen=_optional_listen_address(section, "logout_listen"),
        grace_period_s=section.number("grace_period_s", defaults.grace_period_s, 0, 300),
        max_concurrent_checks=section.integer(
            "max_concurrent_checks", defaults.max_concurrent_checks, 1, 1_000_000
        ),
        workers=_workers(section),
        event_loop=_event_loop(section),
        tls=parse_tls(section, base_dir),
    )
    if server.workers > 1:
        for name, address in (
            ("grpc_listen", server.grpc_listen),
            ("http_listen", server.http_listen),
            ("http_authz_listen", server.http_authz_listen or ""),
            ("logout_listen", server.logout_listen or ""),
        ):
            if address.endswith(":0"):
                raise ConfigError(
                    section.key(name), "workers > 1 share one port: give a fixed port, not 0"
                )
    section.finish()
    return server


def _workers(section: Section) -> int:
    """`workers: auto`: one per CPU the container is given (see config.cpus), at most 64."""
    value = section.raw("workers")
    if value == "auto":
        return min(available_cpus(), MAX_WORKERS)
    if isinstance(value, str):
        raise ConfigError(section.key("workers"), f"expected 1 to {MAX_WORKERS} or auto")
    return section.integer("workers", 1, 1, MAX_WORKERS)


def _role_map(roles: Section) -> RoleMap:
    mapping = roles.mapping("mapping")
    table: dict[str, frozenset[str]] = {}
    patterns: list[RolePattern] = []
    for provider_role, internal in mapping.items():
        key = f"{roles.key('mapping')}.{provider_role}"
        if isinstance(internal, str):
            internal = [internal]
        if not isinstance(internal, list) or not all(isinstance(r, str) for r in internal):
            raise ConfigError(key, "expected a list of internal role names")
        for role in internal:
            if not is_header_safe_role(role):
                raise ConfigError(
                    key, f"internal role {role!r} may not contain commas or control characters"
                )
        name = str(provider_role)
        if not has_placeholder(name):
            table[name] = frozenset(internal)
            continue
        try:
            outputs = tuple(RoleTemplate.parse(role) for role in internal)
            patterns.append(RolePattern.parse(name, outputs))
        except RoleTemplateError as exc:
            raise ConfigError(key, str(exc)) from None
    return RoleMap(
        table=table,
        pass_through_unmapped=roles.boolean("pass_through_unmapped", False),
        patterns=tuple(patterns),
    )


def _cache(section: Section, base_dir: Path) -> CacheConfig:
    redis_url = section.optional_string("redis_url")
    if redis_url is not None and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(section.key("redis_url"), "expected a redis://, rediss:// or unix:// URL")
    cluster = section.boolean("redis_cluster", False)
    if cluster and redis_url is None:
        raise ConfigError(section.key("redis_cluster"), "needs cache.redis_url")
    if cluster and redis_url is not None and redis_url.startswith("unix:"):
        raise ConfigError(section.key("redis_cluster"), "Redis Cluster is reached over TCP")
    namespace = section.string("redis_namespace", "extauthz")
    if not all(ch.isalnum() or ch in "-_.{}" for ch in namespace):
        raise ConfigError(section.key("redis_namespace"), "letters, digits and -_.{} only")
    signing_key = optional_secret(section, "redis_signing_key", base_dir)
    if signing_key is not None:
        key = secret_key_path(section, "redis_signing_key")
        if redis_url is None:
            raise ConfigError(key, "needs cache.redis_url")
        if len(signing_key.reveal()) < MIN_SIGNING_KEY_CHARS:
            raise ConfigError(
                key, f"must be at least {MIN_SIGNING_KEY_CHARS} characters (openssl rand -hex 32)"
            )
    cache = CacheConfig(
        ttl_s=section.number("ttl_seconds", 60, 0, 86_400),
        negative_ttl_s=section.number("negative_ttl_seconds", 10, 0, 3_600),
        max_entries=section.integer("max_entries", 100_000, 1, 10_000_000),
        max_bytes=section.integer("max_bytes", 256 * 1024 * 1024, 64 * 1024, 1 << 40),
        stale_if_error_s=section.number("stale_if_error_seconds", 0, 0, 86_400),
        redis_url=redis_url,
        redis_cluster=cluster,
        redis_namespace=namespace,
        redis_timeout_s=section.integer("redis_timeout_ms", 50, 1, 10_000) / 1000,
        redis_max_connections=section.integer("redis_max_connections", 64, 1, 10_000),
        redis_signing_key=signing_key,
    )
    section.finish()
    return cache


def _headers(section: Section) -> HeaderNames:
    defaults = HeaderNames()
    names: dict[str, str] = {}
    for field_name in ("subject", "username", "email", "roles", "client"):
        value = section.string(field_name, getattr(defaults, field_name)).lower()
        if _HEADER_NAME.fullmatch(value) is None or value in _RESERVED_HEADERS:
            raise ConfigError(section.key(field_name), f"{value!r} is not a usable header name")
        if value in names.values():
            raise ConfigError(
                section.key(field_name), f"header {value!r} is already used for another field"
            )
        names[field_name] = value
    strip = section.boolean("strip_authorization", False)
    section.finish()
    return HeaderNames(strip_authorization=strip, **names)


def authorizer_settings(config: Config) -> AuthorizerSettings:
    """The part of the configuration the decision path uses (and a reload may replace)."""
    return AuthorizerSettings(
        policy=config.policy,
        role_map=config.role_map,
        header_names=config.headers,
        realm=config.provider.realm,
        max_token_bytes=config.max_token_bytes,
        provider_realms={provider.name: provider.realm for provider in config.providers},
        # An allow is remembered for the identity object the cache hands back next time; with
        # ttl_seconds: 0 nothing comes back, and remembering would only keep garbage alive.
        decision_memo_size=min(ALLOWED_MEMO_SIZE, config.cache.max_entries)
        if config.cache.ttl_s > 0
        else 0,
        identity_token=config.identity_token,
        dpop=config.sender.dpop,
        dpop_required=frozenset(p.name for p in config.providers if p.dpop_required),
    )
