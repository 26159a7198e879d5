"""Configuration: parsed and validated once, every error naming the key it is about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from extauthz_server.config.model import Config, load_config, parse_config
from extauthz_server.core.routes import PathKind
from extauthz_server.core.secret import Secret
from extauthz_server.errors import ConfigError
from extauthz_server.identity.introspection import ClientAuthMethod


def revealed(secret: Secret | None) -> str:
    assert secret is not None
    return secret.reveal()


PROVIDER = """\
provider:
  issuer: "http://127.0.0.1:8080/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
"""
ROLES = """\
roles:
  mapping: {admin: [admin], manager: [creator], "org manager": [platformAdmin]}
"""


def config_error(
    text: str, environ: dict[str, str] | None = None, base_dir: Path = Path()
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ or {}, base_dir)
    return info.value


def with_routes(*routes: str) -> str:
    return PROVIDER + ROLES + "routes:\n" + "".join(f"  - {route}\n" for route in routes)


def test_seed_config_parses_into_the_documented_values(seed_config: Config) -> None:
    config = seed_config
    assert config.server.grpc_listen == "127.0.0.1:0"
    assert config.server.http_listen == "127.0.0.1:0"
    assert config.provider.issuer == "http://127.0.0.1:8080/realms/demo"
    assert config.provider.client_id == "ext-authz"
    assert revealed(config.provider.client_secret) == "s3cret"
    assert config.provider.auth_method is ClientAuthMethod.CLIENT_SECRET_BASIC
    assert config.provider.timeout_s == pytest.approx(0.15)
    assert config.provider.realm == "demo"
    assert config.provider.introspection_endpoint is None
    assert [claim.segments for claim in config.role_claims] == [
        ("realm_access", "roles"),
        ("resource_access", "ext-authz", "roles"),
    ]
    assert config.role_map.table == {
        "admin": {"admin"},
        "manager": {"creator"},
        "org manager": {"platformAdmin"},
    }
    assert config.role_map.pass_through_unmapped is False
    assert (config.cache.ttl_s, config.cache.max_entries) == (60.0, 100_000)
    assert config.headers.roles == "x-auth-roles"
    routes = config.policy.routes
    assert [r.name for r in routes] == ["health", "admin", "forms", "default"]
    assert routes[0].public
    assert routes[1].methods == frozenset({"GET", "POST", "PUT", "DELETE"})
    assert routes[1].any_of == {"admin", "platformAdmin"}
    assert routes[2].path.kind is PathKind.PREFIX
    assert routes[3].any_of == frozenset()
    assert routes[3].path.is_catch_all
    assert (routes[3].host, routes[3].methods) == (None, None)


def test_minimal_config_takes_defaults() -> None:
    config = parse_config(PROVIDER, {})
    assert config.server.grpc_listen == "0.0.0.0:9191"
    assert config.provider.timeout_s == pytest.approx(0.15)
    assert config.cache.negative_ttl_s == 10.0
    assert config.policy.routes == ()
    assert config.max_token_bytes == 8192
    assert config.log_level == "INFO"


def test_explicit_realm_overrides_the_one_from_the_issuer() -> None:
    config = parse_config(PROVIDER + "  realm: other\n", {})
    assert config.provider.realm == "other"


def test_environment_variables_are_interpolated() -> None:
    text = PROVIDER.replace("s3cret", '"${KC_SECRET}"').replace(
        "127.0.0.1:8080", "${KC_HOST}:${KC_PORT}"
    )
    config = parse_config(text, {"KC_SECRET": "from-env", "KC_HOST": "kc", "KC_PORT": "8443"})
    assert revealed(config.provider.client_secret) == "from-env"
    assert config.provider.issuer == "http://kc:8443/realms/demo"


def test_missing_environment_variable_names_the_key_and_variable() -> None:
    error = config_error(PROVIDER.replace("s3cret", '"${KC_SECRET}"'))
    assert error.key_path == "provider.client_secret"
    assert "KC_SECRET" in error.problem


def test_missing_variable_inside_a_route_names_the_list_index() -> None:
    error = config_error(
        with_routes("{name: a, path_prefix: /a}", "{name: b, path_prefix: '${P}'}")
    )
    assert error.key_path == "routes[1].path_prefix"


@pytest.mark.parametrize(
    ("environ", "check"),
    [
        ({"EXTAUTHZ__PROVIDER__TIMEOUT_MS": "500"}, lambda c: c.provider.timeout_s == 0.5),
        ({"EXTAUTHZ__CACHE__TTL_SECONDS": "5"}, lambda c: c.cache.ttl_s == 5.0),
        ({"EXTAUTHZ__LOGGING__LEVEL": "debug"}, lambda c: c.log_level == "DEBUG"),
        (
            {"EXTAUTHZ__PROVIDER__CLIENT_SECRET": "other"},
            lambda c: revealed(c.provider.client_secret) == "other",
        ),
        (
            {"EXTAUTHZ__HEADERS__STRIP_AUTHORIZATION": "true"},
            lambda c: c.headers.strip_authorization is True,
        ),
    ],
    ids=["timeout", "new-section", "nested-new-section", "secret", "yaml-boolean"],
)
def test_environment_overrides_replace_keys(
    environ: dict[str, str], check: Callable[[Config], bool]
) -> None:
    config = parse_config(PROVIDER + "  timeout_ms: 150\n", environ)
    assert check(config)


def test_override_that_fails_validation_names_the_config_key() -> None:
    error = config_error(PROVIDER, {"EXTAUTHZ__PROVIDER__TIMEOUT_MS": "0"})
    assert error.key_path == "provider.timeout_ms"
    assert "between 1 and 60000" in error.problem


@pytest.mark.parametrize(
    ("name", "value", "key_path"),
    [
        ("EXTAUTHZ__PROVIDER__", "1", "EXTAUTHZ__PROVIDER__"),
        ("EXTAUTHZ__PROVIDER__ISSUER__X", "1", "EXTAUTHZ__PROVIDER__ISSUER__X"),
        ("EXTAUTHZ__PROVIDER__TIMEOUT_MS", "[1", "EXTAUTHZ__PROVIDER__TIMEOUT_MS"),
    ],
    ids=["empty-part", "inside-a-scalar", "invalid-yaml"],
)
def test_bad_override_names_the_variable(name: str, value: str, key_path: str) -> None:
    assert config_error(PROVIDER, {name: value}).key_path == key_path


def test_string_override_is_taken_verbatim_so_any_secret_works() -> None:
    for secret in ("[TopSecretValue", "123456", "true", "#hash"):
        config = parse_config(PROVIDER, {"EXTAUTHZ__PROVIDER__CLIENT_SECRET": secret})
        assert revealed(config.provider.client_secret) == secret


def test_invalid_yaml_in_an_override_is_reported_without_echoing_the_value() -> None:
    error = config_error(PROVIDER, {"EXTAUTHZ__PROVIDER__TIMEOUT_MS": "[TopSecretValue"})
    assert error.key_path == "EXTAUTHZ__PROVIDER__TIMEOUT_MS"
    assert "TopSecretValue" not in str(error)


def test_client_secret_file_is_read_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("file-s3cret\n", encoding="utf-8")
    text = PROVIDER.replace("client_secret: s3cret", "client_secret_file: secret.txt")
    config = parse_config(text, {}, base_dir=tmp_path)
    assert revealed(config.provider.client_secret) == "file-s3cret"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("  \n", "empty")],
    ids=["missing-file", "empty-file"],
)
def test_unusable_client_secret_file_is_an_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    if content is not None:
        (tmp_path / "secret.txt").write_text(content, encoding="utf-8")
    text = PROVIDER.replace("client_secret: s3cret", "client_secret_file: secret.txt")
    error = config_error(text, base_dir=tmp_path)
    assert error.key_path == "provider.client_secret_file"
    assert problem in error.problem


def test_client_secret_and_client_secret_file_together_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("x", encoding="utf-8")
    error = config_error(PROVIDER + "  client_secret_file: secret.txt\n", base_dir=tmp_path)
    assert error.key_path == "provider.client_secret_file"
    assert "not both" in error.problem


def test_client_secret_is_required() -> None:
    error = config_error(PROVIDER.replace("  client_secret: s3cret\n", ""))
    assert error.key_path == "provider.client_secret"
    assert "required" in error.problem


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        (PROVIDER + "rotues: []\n", "rotues"),
        (PROVIDER + "server: {grpc_listen: '127.0.0.1:1', port: 1}\n", "server.port"),
        (PROVIDER + "  timeout: 150\n", "provider.timeout"),
        (PROVIDER + "roles: {claim: [groups]}\n", "roles.claim"),
        (PROVIDER + "cache: {ttl: 5}\n", "cache.ttl"),
        (PROVIDER + "headers: {subjects: x-sub}\n", "headers.subjects"),
        (PROVIDER + "limits: {max_token_size: 100}\n", "limits.max_token_size"),
        (PROVIDER + "logging: {lvl: INFO}\n", "logging.lvl"),
        (
            with_routes(
                "{name: a, path_prefix: /a}",
                "{name: b, path_prefix: /b}",
                "{name: c, path_prefix: /c, any_off: [admin]}",
            ),
            "routes[2].any_off",
        ),
    ],
    ids=[
        "top-level",
        "server",
        "provider",
        "roles",
        "cache",
        "headers",
        "limits",
        "logging",
        "route",
    ],
)
def test_unknown_keys_are_named(text: str, key_path: str) -> None:
    error = config_error(text)
    assert error.key_path == key_path
    assert error.problem.startswith("unknown key")
    assert str(error).startswith(f"{key_path}: unknown key")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            PROVIDER + "cache: {negative_ttl: 5}\n",
            "unknown key (did you mean 'negative_ttl_seconds'?)",
        ),
        (
            with_routes("{name: a, path_prefix: /a, any_off: [admin]}"),
            "unknown key (did you mean 'any_of'?)",
        ),
        (PROVIDER + "logging: {zzz: 1}\n", "unknown key"),
    ],
    ids=["cache-key", "route-key", "nothing-close"],
)
def test_an_unknown_key_suggests_the_closest_known_one(text: str, problem: str) -> None:
    assert config_error(text).problem == problem


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "extauthz.yaml"
    path.write_text(PROVIDER + "routes:\n  - {name: a, path_prefix: /a\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.problem.startswith(f"not valid YAML: {path}:7:")
    assert "<unicode string>" not in str(caught.value)


# (text, key path, words in the problem)
WRONG_TYPES: list[tuple[str, str, str]] = [
    ("[]\n", "(top level)", "expected a mapping, got list"),
    (PROVIDER + "server: [a]\n", "server", "expected a mapping"),
    (PROVIDER + "server: {grpc_listen: 9191}\n", "server.grpc_listen", "non-empty string"),
    (PROVIDER + "server: {grpc_listen: 'nohost'}\n", "server.grpc_listen", "host:port"),
    (PROVIDER + "server: {http_listen: 'h:70000'}\n", "server.http_listen", "host:port"),
    (PROVIDER + "server: {event_loop: trio}\n", "server.event_loop", "asyncio or uvloop"),
    (PROVIDER + "  timeout_ms: 1.5\n", "provider.timeout_ms", "expected an integer"),
    (PROVIDER + "  timeout_ms: true\n", "provider.timeout_ms", "expected an integer"),
    (PROVIDER + "  timeout_ms: 0\n", "provider.timeout_ms", "between"),
    (PROVIDER.replace('"http://127.0.0.1:8080/realms/demo"', "ftp://x"), "provider.issuer", "URL"),
    (PROVIDER.replace("client_id: ext-authz", "client_id: ''"), "provider.client_id", "string"),
    (PROVIDER + "cache: {ttl_seconds: sixty}\n", "cache.ttl_seconds", "expected a number"),
    (PROVIDER + "cache: {max_entries: 0}\n", "cache.max_entries", "between"),
    (PROVIDER + "roles: {claims: realm_access.roles}\n", "roles.claims", "list of strings"),
    (PROVIDER + "roles: {mapping: [admin]}\n", "roles.mapping", "expected a mapping"),
    (PROVIDER + "roles: {mapping: {admin: 5}}\n", "roles.mapping.admin", "list of internal"),
    (PROVIDER + "roles: {mapping: {admin: ['a,b']}}\n", "roles.mapping.admin", "commas"),
    (PROVIDER + "roles: {pass_through_unmapped: maybe}\n", "roles.pass_through_unmapped", "true"),
    (PROVIDER + "headers: {strip_authorization: 1}\n", "headers.strip_authorization", "true"),
    (PROVIDER + "limits: {max_token_bytes: 10}\n", "limits.max_token_bytes", "between"),
    (PROVIDER + "logging: {level: TRACE}\n", "logging.level", "DEBUG"),
    (PROVIDER + "routes: {name: a}\n", "routes", "expected a list"),
    (PROVIDER + "routes: [a]\n", "routes[0]", "expected a mapping"),
    (with_routes("{name: a, path_prefix: /a, public: maybe}"), "routes[0].public", "true"),
    (with_routes("{name: a, path_prefix: /a, any_of: admin}"), "routes[0].any_of", "list"),
    (with_routes("{name: a, path_prefix: a}"), "routes[0].path_prefix", "start with '/'"),
    (with_routes("{path_prefix: /a}"), "routes[0].name", "required"),
    (with_routes("{name: a, path_prefix: /a, methods: []}"), "routes[0].methods", "non-empty"),
    (with_routes("{name: a, path_prefix: /a, methods: [G-T]}"), "routes[0].methods", "HTTP"),
]


@pytest.mark.parametrize(
    ("text", "key_path", "words"), WRONG_TYPES, ids=[row[1] + "/" + row[2] for row in WRONG_TYPES]
)
def test_wrong_values_are_named(text: str, key_path: str, words: str) -> None:
    error = config_error(text)
    assert error.key_path == key_path
    assert words in error.problem


def test_invalid_yaml_is_a_config_error() -> None:
    error = config_error("provider: [unclosed\n")
    assert error.key_path == ""
    assert "not valid YAML" in error.problem


@pytest.mark.parametrize(
    "route",
    [
        "{name: a, path_prefix: /a, path: /a}",
        "{name: a, path: /a, path_glob: /a/*}",
        "{name: a}",
    ],
    ids=["prefix-and-exact", "exact-and-glob", "none"],
)
def test_route_needs_exactly_one_path_kind(route: str) -> None:
    error = config_error(with_routes(route))
    assert error.key_path == "routes[0]"
    assert "exactly one of" in error.problem


@pytest.mark.parametrize(
    "requirement",
    ["any_of: [admin]", "all_of: [admin]", "scopes: [openid]"],
    ids=["any-of", "all-of", "scopes"],
)
def test_public_route_cannot_require_anything(requirement: str) -> None:
    error = config_error(with_routes(f"{{name: a, path_prefix: /a, public: true, {requirement}}}"))
    assert error.key_path == "routes[0]"
    assert "public" in error.problem


@pytest.mark.parametrize("key", ["any_of", "all_of"], ids=["any-of", "all-of"])
def test_unknown_internal_role_is_named(key: str) -> None:
    error = config_error(
        with_routes("{name: a, path_prefix: /a}", f"{{name: b, path_prefix: /b, {key}: [admn]}}")
    )
    assert error.key_path == f"routes[1].{key}"
    assert "'admn'" in error.problem


def test_unknown_internal_roles_are_allowed_with_pass_through() -> None:
    text = with_routes("{name: b, path_prefix: /b, any_of: [orders.read]}").replace(
        "roles:\n", "roles:\n  pass_through_unmapped: true\n"
    )
    assert parse_config(text, {}).policy.routes[0].any_of == {"orders.read"}


def test_duplicate_route_names_are_an_error() -> None:
    error = config_error(
        with_routes("{name: a, path_prefix: /a}", "{name: b, path: /b}", "{name: a, path: /c}")
    )
    assert error.key_path == "routes[2].name"
    assert "duplicate" in error.problem


def test_route_after_catch_all_is_unreachable() -> None:
    error = config_error(
        with_routes("{name: all, path_prefix: /}", "{name: later, path_prefix: /admin}")
    )
    assert error.key_path == "routes[1]"
    assert "unreachable" in error.problem
    assert "'all'" in error.problem


@pytest.mark.parametrize(
    "catch_all",
    [
        "{name: all, path_prefix: /, methods: [GET]}",
        "{name: all, path_prefix: /, host: a.example.com}",
    ],
    ids=["restricted-by-method", "restricted-by-host"],
)
def test_restricted_slash_prefix_does_not_hide_later_routes(catch_all: str) -> None:
    config = parse_config(with_routes(catch_all, "{name: later, path_prefix: /admin}"), {})
    assert [r.name for r in config.policy.routes] == ["all", "later"]


def test_route_host_and_methods_are_normalised() -> None:
    config = parse_config(
        with_routes("{name: a, path_glob: '/a/*', host: API.Example.COM, methods: [get, Post]}"),
        {},
    )
    route = config.policy.routes[0]
    assert route.host is not None
    assert route.host.pattern == "api.example.com"
    assert route.methods == frozenset({"GET", "POST"})
    assert route.path.kind is PathKind.GLOB


def test_invalid_auth_method_lists_the_choices() -> None:
    error = config_error(PROVIDER + "  auth_method: private_key_jwt\n")
    assert error.key_path == "provider.auth_method"
    assert "client_secret_basic" in error.problem
    assert "client_secret_post" in error.problem


def test_client_secret_post_is_accepted() -> None:
    config = parse_config(PROVIDER + "  auth_method: client_secret_post\n", {})
    assert config.provider.auth_method is ClientAuthMethod.CLIENT_SECRET_POST


@pytest.mark.parametrize(
    ("headers", "key_path", "words"),
    [
        ("{subject: 'x auth'}", "headers.subject", "not a usable header name"),
        ("{email: 'x-auth:email'}", "headers.email", "not a usable header name"),
        ("{roles: authorization}", "headers.roles", "not a usable header name"),
        ("{client: Host}", "headers.client", "not a usable header name"),
        ("{username: x-auth-subject}", "headers.username", "already used"),
        ("{roles: X-Auth-Email}", "headers.roles", "already used"),
    ],
    ids=[
        "space",
        "colon",
        "reserved-authorization",
        "reserved-host",
        "duplicate",
        "duplicate-case",
    ],
)
def test_bad_header_names_are_named(headers: str, key_path: str, words: str) -> None:
    error = config_error(PROVIDER + f"headers: {headers}\n")
    assert error.key_path == key_path
    assert words in error.problem


def test_header_names_are_lower_cased() -> None:
    config = parse_config(PROVIDER + "headers: {subject: X-User-Id}\n", {})
    assert config.headers.subject == "x-user-id"


def test_secret_never_appears_in_the_config_repr(seed_config: Config) -> None:
    assert "s3cret" not in repr(seed_config)
    assert "s3cret" not in str(seed_config)
    assert "s3cret" not in repr(seed_config.provider)
    assert "********" in repr(seed_config.provider)


def test_errors_are_config_errors_with_code() -> None:
    error = config_error(PROVIDER + "cache: {ttl: 5}\n")
    assert error.code == "config_error"


def test_null_override_clears_an_optional_key() -> None:
    text = PROVIDER + '  introspection_endpoint: "http://kc/introspect"\n'
    config = parse_config(text, {"EXTAUTHZ__PROVIDER__INTROSPECTION_ENDPOINT": "null"})
    assert config.provider.introspection_endpoint is None


def test_realm_with_control_characters_is_refused() -> None:
    error = config_error(PROVIDER + '  realm: "demo\\r\\nSet-Cookie: x"\n')
    assert error.key_path == "provider.realm"


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("{name: api, path_prefix: /api}", "{name: forms, path_prefix: /api/forms}"),
        ("{name: all, path_glob: /**}", "{name: x, path: /x}"),
        ("{name: same, path_prefix: /x}", "{name: again, path_prefix: /x}"),
    ],
    ids=["broader-prefix-first", "glob-catch-all-first", "duplicate-matcher"],
)
def test_route_shadowed_by_an_earlier_one_is_unreachable(earlier: str, later: str) -> None:
    error = config_error(with_routes(earlier, later))
    assert error.key_path == "routes[1]"
    assert "unreachable" in error.problem


def test_uvloop_event_loop_is_accepted_when_installed() -> None:
    config = parse_config(PROVIDER + "server: {event_loop: uvloop}\n", {})

    assert config.server.event_loop == "uvloop"
    assert parse_config(PROVIDER, {}).server.event_loop == "asyncio"


SIGNING_KEY = "0123456789abcdef0123456789abcdef"
REDIS_CACHE = "cache:\n  redis_url: redis://127.0.0.1:6379/0\n"


def test_the_redis_signing_key_is_a_secret_inline_or_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "seal.key").write_text(SIGNING_KEY + "\n", encoding="utf-8")

    inline = parse_config(PROVIDER + REDIS_CACHE + f"  redis_signing_key: {SIGNING_KEY}\n", {})
    from_file = parse_config(
        PROVIDER + REDIS_CACHE + "  redis_signing_key_file: seal.key\n", {}, base_dir=tmp_path
    )
    unset = parse_config(PROVIDER + REDIS_CACHE, {})

    assert revealed(inline.cache.redis_signing_key) == SIGNING_KEY
    assert revealed(from_file.cache.redis_signing_key) == SIGNING_KEY
    assert unset.cache.redis_signing_key is None
    assert SIGNING_KEY not in repr(inline.cache)


@pytest.mark.parametrize(
    ("cache", "key", "problem"),
    [
        (REDIS_CACHE + "  redis_signing_key: short\n", "cache.redis_signing_key", "at least 32"),
        (
            f"cache:\n  redis_signing_key: {SIGNING_KEY}\n",
            "cache.redis_signing_key",
            "needs cache.redis_url",
        ),
        (
            REDIS_CACHE + f"  redis_signing_key: {SIGNING_KEY}\n  redis_signing_key_file: k\n",
            "cache.redis_signing_key_file",
            "not both",
        ),
        (
            REDIS_CACHE + "  redis_signing_key_file: absent\n",
            "cache.redis_signing_key_file",
            "cannot read",
        ),
    ],
    ids=["too-short", "without-redis", "inline-and-file", "missing-file"],
)
def test_an_unusable_redis_signing_key_is_an_error(
    tmp_path: Path, cache: str, key: str, problem: str
) -> None:
    error = config_error(PROVIDER + cache, base_dir=tmp_path)

    assert error.key_path == key
    assert problem in error.problem
    assert "short" not in str(error)
