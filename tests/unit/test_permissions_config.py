"""provider.permissions: validated at load, every error naming its key; URL templates and
answers read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from extauthz_server.config.permissions import parse_permissions
from extauthz_server.config.reader import EnvValue, Section
from extauthz_server.errors import ConfigError
from extauthz_server.metadata.circuit_breaker import BreakerSettings
from extauthz_server.metadata.permissions import (
    BearerAuth,
    ClientCredentialsAuth,
    FailurePolicy,
    NoAuth,
    PermissionsSettings,
    RequestMethod,
    read_names,
)

URL = "https://perms.internal/users/{sub}/permissions"


def parse(text: str, base_dir: Path = Path()) -> PermissionsSettings | None:
    return parse_permissions(Section(yaml.safe_load(text) or {}, "provider.permissions"), base_dir)


def parsed(text: str, base_dir: Path = Path()) -> PermissionsSettings:
    settings = parse(text, base_dir)
    assert settings is not None
    return settings


def error(text: str, base_dir: Path = Path()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value


def test_only_url_is_needed_and_the_rest_takes_defaults() -> None:
    settings = parsed(f"url: {URL}")
    assert settings.url.text == URL
    assert settings.url.placeholders == ("sub",)
    assert settings.method is RequestMethod.GET
    assert settings.auth == NoAuth()
    assert settings.timeout_s == pytest.approx(0.1)
    assert settings.roles_path == ("permissions",)
    assert settings.ttl_s == 60.0
    assert settings.on_failure is FailurePolicy.DENY
    assert settings.max_entries == 100_000
    assert settings.circuit_breaker == BreakerSettings(failure_threshold=5, open_s=5.0)
    assert settings.request_fields == ("sub",)


def test_an_empty_section_means_no_permissions_api() -> None:
    assert parse("") is None
    assert parse("url: null") is None


def test_every_key_is_read() -> None:
    settings = parsed(
        f"""
        url: "{URL}?client={{client_id}}"
        method: post
        auth: {{type: client_credentials, token_endpoint: "https://idp/token", scope: perms}}
        timeout_ms: 250
        roles_path: data.grants
        ttl_seconds: 30
        on_failure: ignore
        max_entries: 10
        circuit_breaker: {{failures: 0, open_seconds: 30}}
        """
    )
    assert settings.method is RequestMethod.POST
    assert settings.auth == ClientCredentialsAuth("https://idp/token", "perms")
    assert settings.timeout_s == pytest.approx(0.25)
    assert settings.roles_path == ("data", "grants")
    assert (settings.ttl_s, settings.on_failure, settings.max_entries) == (
        30.0,
        FailurePolicy.IGNORE,
        10,
    )
    assert settings.circuit_breaker == BreakerSettings(failure_threshold=0, open_s=30.0)
    # A POST carries every field, so its answer may depend on any of them.
    assert settings.request_fields == ("sub", "username", "client_id")


def test_auth_shorthand_names_the_type() -> None:
    assert parsed(f"{{url: '{URL}', auth: client_credentials}}").auth == ClientCredentialsAuth(
        None, None
    )
    assert parsed(f"{{url: '{URL}', auth: none}}").auth == NoAuth()


def test_bearer_token_is_a_secret_inline_or_from_a_file(tmp_path: Path) -> None:
    inline = parsed(f"{{url: '{URL}', auth: {{type: bearer, token: abc.def-123}}}}")
    assert isinstance(inline.auth, BearerAuth)
    assert inline.auth.token.reveal() == "abc.def-123"
    assert "abc" not in repr(inline)
    (tmp_path / "perms.token").write_text("from-file\n")
    from_file = parsed(
        f"{{url: '{URL}', auth: {{type: bearer, token_file: perms.token}}}}", tmp_path
    )
    assert isinstance(from_file.auth, BearerAuth)
    assert from_file.auth.token.reveal() == "from-file"


def test_an_environment_override_of_the_url_is_taken_as_text() -> None:
    data = {"url": EnvValue(URL, "EXTAUTHZ__PROVIDER__PERMISSIONS__URL")}
    settings = parse_permissions(Section(data, "provider.permissions"), Path())
    assert settings is not None
    assert settings.url.text == URL


def test_a_top_level_list_answer_is_read_with_the_dot_path() -> None:
    settings = parsed(f"{{url: '{URL}', roles_path: '.'}}")
    assert settings.roles_path == ()
    assert read_names(["a", "b"], settings.roles_path) == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("method: GET", "provider.permissions.url", "is required"),
        ("url: 42", "provider.permissions.url", "expected a non-empty string"),
        ("url: /relative/{sub}", "provider.permissions.url", "http(s) URL"),
        (f"url: '{URL}/{{user}}'", "provider.permissions.url", "unknown placeholder {user}"),
        (f"url: '{URL}/{{sub!r}}'", "provider.permissions.url", "no format spec"),
        (f"url: '{URL}/{{sub'", "provider.permissions.url", "bad placeholder syntax"),
        ("url: 'https://{sub}.perms/x'", "provider.permissions.url", "only in the path"),
        ("url: 'https://perms/a b/{sub}'", "provider.permissions.url", "printable ASCII"),
        (f"{{url: '{URL}', method: PUT}}", "provider.permissions.method", "expected GET or POST"),
        (f"{{url: '{URL}', timeout_ms: 0}}", "provider.permissions.timeout_ms", "between 1"),
        (f"{{url: '{URL}', ttl_seconds: -1}}", "provider.permissions.ttl_seconds", "between 0"),
        (f"{{url: '{URL}', on_failure: allow}}", "provider.permissions.on_failure", "deny"),
        (f"{{url: '{URL}', max_entries: 0}}", "provider.permissions.max_entries", "between 1"),
        (f"{{url: '{URL}', roles_path: 'a..b'}}", "provider.permissions.roles_path", "empty"),
        (f"{{url: '{URL}', ttl: 5}}", "provider.permissions.ttl", "unknown key"),
        (
            f"{{url: '{URL}', circuit_breaker: {{failures: -1}}}}",
            "provider.permissions.circuit_breaker.failures",
            "between 0",
        ),
        (
            f"{{url: '{URL}', circuit_breaker: {{open_seconds: 0}}}}",
            "provider.permissions.circuit_breaker.open_seconds",
            "between 0.1",
        ),
        (
            f"{{url: '{URL}', circuit_breaker: {{after: 3}}}}",
            "provider.permissions.circuit_breaker.after",
            "unknown key",
        ),
        (
            f"{{url: '{URL}', circuit_breaker: 5}}",
            "provider.permissions.circuit_breaker",
            "mapping",
        ),
        ("{bogus: 1}", "provider.permissions.bogus", "unknown key"),
        (f"{{url: '{URL}', auth: 7}}", "provider.permissions.auth", "expected a mapping"),
        (
            f"{{url: '{URL}', auth: basic}}",
            "provider.permissions.auth.type",
            "expected none, bearer or client_credentials",
        ),
        (f"{{url: '{URL}', auth: {{}}}}", "provider.permissions.auth.type", "is required"),
        (f"{{url: '{URL}', auth: bearer}}", "provider.permissions.auth.token", "is required"),
        (
            f"{{url: '{URL}', auth: {{type: bearer, token: a, token_file: f}}}}",
            "provider.permissions.auth.token_file",
            "not both",
        ),
        (
            f"{{url: '{URL}', auth: {{type: bearer, token: 'a b'}}}}",
            "provider.permissions.auth.token",
            "printable ASCII",
        ),
        (
            f"{{url: '{URL}', auth: {{type: bearer, token_file: missing.token}}}}",
            "provider.permissions.auth.token_file",
            "cannot read",
        ),
        (
            f"{{url: '{URL}', auth: {{type: none, token: a}}}}",
            "provider.permissions.auth.token",
            "unknown key",
        ),
        (
            f"{{url: '{URL}', auth: {{type: client_credentials, token_endpoint: ftp://x}}}}",
            "provider.permissions.auth.token_endpoint",
            "http(s) URL",
        ),
    ],
    ids=[
        "url-missing",
        "url-not-a-string",
        "url-relative",
        "unknown-placeholder",
        "placeholder-conversion",
        "unclosed-brace",
        "placeholder-in-host",
        "space-in-url",
        "method-unknown",
        "timeout-zero",
        "ttl-negative",
        "policy-unknown",
        "max-entries-zero",
        "roles-path-empty-segment",
        "unknown-key",
        "breaker-failures-negative",
        "breaker-open-zero",
        "breaker-unknown-key",
        "breaker-not-a-mapping",
        "unknown-key-without-url",
        "auth-not-a-mapping",
        "auth-type-unknown",
        "auth-type-missing",
        "bearer-without-token",
        "bearer-token-and-file",
        "bearer-token-with-space",
        "bearer-token-file-missing",
        "none-with-token",
        "token-endpoint-not-http",
    ],
)
def test_errors_name_the_key(text: str, key: str, problem: str) -> None:
    problem_seen = error(text)
    assert problem_seen.key_path == key
    assert problem in problem_seen.problem


def test_an_error_never_quotes_the_bearer_token() -> None:
    problem = error(f"{{url: '{URL}', auth: {{type: bearer, token: 'sekrit value'}}}}")
    assert "sekrit" not in str(problem)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"sub": "f4c1-77"}, "https://perms.internal/users/f4c1-77/permissions"),
        ({"sub": "a/b?c#d"}, "https://perms.internal/users/a%2Fb%3Fc%23d/permissions"),
        ({"sub": "José Ü"}, "https://perms.internal/users/Jos%C3%A9%20%C3%9C/permissions"),
        ({"sub": ".."}, "https://perms.internal/users/%2E%2E/permissions"),
        ({"sub": "a..b"}, "https://perms.internal/users/a..b/permissions"),
        ({"sub": None}, None),
        ({"sub": ""}, None),
    ],
    ids=["plain", "reserved", "non-ascii", "dot-segment", "dots-inside", "missing", "empty"],
)
def test_url_values_are_one_encoded_path_segment(
    values: dict[str, str | None], expected: str | None
) -> None:
    template = parsed(f"url: '{URL}'").url
    assert template.render(values) == expected


def test_escaped_braces_stay_literal() -> None:
    template = parsed("url: 'https://perms/{{literal}}/{sub}'").url
    assert template.render({"sub": "x"}) == "https://perms/{literal}/x"


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        ({"permissions": ["a", "b", ""]}, ("permissions",), {"a", "b"}),
        ({"permissions": "a b  c"}, ("permissions",), {"a", "b", "c"}),
        ({"data": {"grants": ["Manager for Europe"]}}, ("data", "grants"), {"Manager for Europe"}),
        ({"permissions": []}, ("permissions",), set()),
        ({"permissions": ["a", 1]}, ("permissions",), None),
        ({"permissions": None}, ("permissions",), None),
        ({}, ("permissions",), None),
        (["a"], ("permissions",), None),
        ({"data": ["x"]}, ("data", "grants"), None),
    ],
    ids=[
        "list",
        "space-separated",
        "nested",
        "empty-list",
        "non-string-item",
        "null",
        "missing",
        "not-an-object",
        "path-through-a-list",
    ],
)
def test_names_are_read_strictly(
    document: object, path: tuple[str, ...], expected: set[str] | None
) -> None:
    assert read_names(document, path) == (None if expected is None else frozenset(expected))
