"""The `provider.permissions` section: the remote permissions API's settings, validated once
at load (URL template, method, auth, bounds, circuit breaker)."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import urlsplit

from extauthz_server.config.reader import Section, optional_secret, secret_key_path
from extauthz_server.core.secret import Secret
from extauthz_server.errors import ConfigError
from extauthz_server.metadata.circuit_breaker import BreakerSettings
from extauthz_server.metadata.permissions import (
    PLACEHOLDERS,
    ApiAuth,
    BearerAuth,
    ClientCredentialsAuth,
    FailurePolicy,
    NoAuth,
    PermissionsSettings,
    RequestMethod,
    UrlTemplate,
)

_KEYS = (
    "url",
    "method",
    "auth",
    "timeout_ms",
    "roles_path",
    "ttl_seconds",
    "on_failure",
    "max_entries",
    "circuit_breaker",
)


def parse_permissions(section: Section, base_dir: Path) -> PermissionsSettings | None:
    """The settings in `section`, or None when it is empty (no permissions API)."""
    if not any(section.has(key) for key in _KEYS):
        for key in _KEYS:
            section.raw(key)
        section.finish()
        return None
    url = parse_url_template(section.key("url"), section.string("url"))
    method = section.member("method", RequestMethod, RequestMethod.GET, upper=True)
    auth = _auth(section, base_dir)
    timeout_ms = section.integer("timeout_ms", 100, 1, 60_000)
    roles_path = section.string("roles_path", "permissions")
    ttl_s = section.number("ttl_seconds", 60, 0, 86_400)
    on_failure = section.member("on_failure", FailurePolicy, FailurePolicy.DENY)
    max_entries = section.integer("max_entries", 100_000, 1, 10_000_000)
    circuit_breaker = parse_circuit_breaker(section.section("circuit_breaker"))
    section.finish()
    segments = () if roles_path == "." else tuple(roles_path.split("."))
    if any(not segment for segment in segments):
        raise ConfigError(section.key("roles_path"), f"empty segment in {roles_path!r}")
    return PermissionsSettings(
        url=url,
        method=method,
        auth=auth,
        timeout_s=timeout_ms / 1000,
        roles_path=segments,
        ttl_s=ttl_s,
        on_failure=on_failure,
        max_entries=max_entries,
        circuit_breaker=circuit_breaker,
    )


def parse_circuit_breaker(section: Section) -> BreakerSettings:
    """`circuit_breaker: {failures, open_seconds}`, as the remote dependencies take it."""
    failures = section.integer("failures", 5, 0, 1_000)
    open_s = section.number("open_seconds", 5, 0.1, 3_600)
    section.finish()
    return BreakerSettings(failure_threshold=failures, open_s=open_s)


def parse_url_template(key: str, text: str) -> UrlTemplate:
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(key, f"bad placeholder syntax: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and name not in PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ConfigError(key, f"unknown placeholder {{{name}}}; allowed: {allowed}")
        if spec or conversion:
            raise ConfigError(key, f"placeholder {{{name}}} takes no format spec or conversion")
        parts.append((literal, name))
    template = UrlTemplate(text, tuple(parts))
    # Placeholders are checked against a rendering, so `{{`/`}}` escapes count as braces.
    sample = template.render(dict.fromkeys(PLACEHOLDERS, "x")) or ""
    split = urlsplit(sample)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {text!r}")
    if urlsplit(text.replace("{", "").replace("}", "")).netloc != split.netloc:
        # A subject must never choose the host the request goes to.
        raise ConfigError(key, "placeholders are allowed only in the path and the query")
    if any(ch <= " " or ch == "\x7f" or not ch.isascii() for ch in sample):
        raise ConfigError(key, "may contain only printable ASCII (percent-encode the rest)")
    return template


def _auth(section: Section, base_dir: Path) -> ApiAuth:
    value = section.raw("auth", "none")
    if isinstance(value, str):
        # The shorthand `auth: none` or `auth: client_credentials`.
        auth = Section({"type": value}, section.key("auth"))
    else:
        auth = Section(value, section.key("auth"))
    kind = auth.choice("type", ("none", "bearer", "client_credentials"))
    if kind == "none":
        auth.finish()
        return NoAuth()
    if kind == "bearer":
        token = _token(auth, base_dir)
        auth.finish()
        return BearerAuth(token)
    endpoint = auth.optional_string("token_endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(auth.key("token_endpoint"), f"expected an http(s) URL, got {endpoint!r}")
    scope = auth.optional_string("scope")
    auth.finish()
    return ClientCredentialsAuth(endpoint, scope)


def _token(auth: Section, base_dir: Path) -> Secret:
    token = optional_secret(auth, "token", base_dir)
    if token is None:
        raise ConfigError(auth.key("token"), "is required (or token_file) for bearer auth")
    # The value goes into a header: refuse what would split it or be sent mangled. The
    # message never quotes the token.
    text = token.reveal()
    if any(ch <= " " or ch == "\x7f" or not ch.isascii() for ch in text):
        raise ConfigError(secret_key_path(auth, "token"), "must be printable ASCII without spaces")
    return token
