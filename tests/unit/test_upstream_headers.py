"""Identity headers for the upstream; every configured identity header not set is removed."""

from __future__ import annotations

import dataclasses

import pytest

from extauthz_server.config.model import Config
from extauthz_server.core.headers import HeaderNames, upstream_headers
from extauthz_server.core.identity import Identity

NAMES = HeaderNames()
IDENTITY_HEADERS = (
    "x-auth-subject",
    "x-auth-username",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-client",
)

ALICE = Identity(
    subject="a292fb04",
    username="alice",
    email="alice@example.com",
    client_id="web-app",
    scopes=frozenset({"openid"}),
    provider_roles=frozenset({"admin"}),
    expires_at=None,
)


def test_full_identity_sets_every_header_with_roles_sorted_and_comma_joined() -> None:
    result = upstream_headers(NAMES, ALICE, frozenset({"platformAdmin", "admin", "creator"}))
    assert dict(result.to_set) == {
        "x-auth-subject": "a292fb04",
        "x-auth-username": "alice",
        "x-auth-email": "alice@example.com",
        "x-auth-roles": "admin,creator,platformAdmin",
        "x-auth-client": "web-app",
    }
    assert result.to_remove == ()


def test_headers_are_in_configured_order() -> None:
    result = upstream_headers(NAMES, ALICE, frozenset({"admin"}))
    assert tuple(name for name, _ in result.to_set) == IDENTITY_HEADERS


@pytest.mark.parametrize(
    ("changes", "roles", "removed"),
    [
        ({"username": None}, {"admin"}, ("x-auth-username",)),
        ({"email": None}, {"admin"}, ("x-auth-email",)),
        ({"client_id": None}, {"admin"}, ("x-auth-client",)),
        ({}, set(), ("x-auth-roles",)),
        ({"username": "", "email": ""}, {"admin"}, ("x-auth-username", "x-auth-email")),
        (
            {"username": None, "email": None, "client_id": None},
            set(),
            ("x-auth-username", "x-auth-email", "x-auth-roles", "x-auth-client"),
        ),
    ],
    ids=[
        "no-username",
        "no-email",
        "no-client",
        "no-roles",
        "empty-strings",
        "subject-only",
    ],
)
def test_identity_headers_not_set_are_always_removed(
    changes: dict[str, object], roles: set[str], removed: tuple[str, ...]
) -> None:
    identity = dataclasses.replace(ALICE, **changes)  # type: ignore[arg-type]
    result = upstream_headers(NAMES, identity, frozenset(roles))
    assert result.to_remove == removed
    set_names = {name for name, _ in result.to_set}
    assert set_names.isdisjoint(removed)
    assert set_names | set(removed) == set(IDENTITY_HEADERS)


def test_no_identity_removes_every_identity_header() -> None:
    result = upstream_headers(NAMES, None, frozenset())
    assert result.to_set == ()
    assert result.to_remove == IDENTITY_HEADERS


def test_roles_without_identity_are_not_sent() -> None:
    result = upstream_headers(NAMES, None, frozenset({"admin"}))
    assert result.to_set == ()
    assert "x-auth-roles" in result.to_remove


@pytest.mark.parametrize("identity", [ALICE, None], ids=["with-identity", "anonymous"])
def test_strip_authorization_adds_authorization_to_remove(identity: Identity | None) -> None:
    names = HeaderNames(strip_authorization=True)
    result = upstream_headers(names, identity, frozenset({"admin"}))
    assert "authorization" in result.to_remove
    assert "authorization" not in {name for name, _ in result.to_set}


def test_authorization_is_kept_by_default() -> None:
    assert "authorization" not in upstream_headers(NAMES, None, frozenset()).to_remove


@pytest.mark.parametrize(
    ("field", "value", "header"),
    [
        ("subject", "alice\r\nx-auth-roles: admin", "x-auth-subject"),
        ("username", "alice\nx-injected: 1", "x-auth-username"),
        ("email", "a@example.com\r", "x-auth-email"),
        ("client_id", "web\x00app", "x-auth-client"),
        ("username", "del\x7f", "x-auth-username"),
    ],
    ids=["crlf-in-subject", "lf-in-username", "cr-in-email", "nul-in-client", "del-in-username"],
)
def test_values_with_control_characters_are_dropped_and_removed(
    field: str, value: str, header: str
) -> None:
    identity = dataclasses.replace(ALICE, **{field: value})  # type: ignore[arg-type]
    result = upstream_headers(NAMES, identity, frozenset({"admin"}))
    assert header not in dict(result.to_set)
    assert header in result.to_remove
    assert all("\r" not in v and "\n" not in v for _, v in result.to_set)


def test_tab_and_non_ascii_values_are_sent() -> None:
    identity = dataclasses.replace(ALICE, username="José\tDoe")
    assert dict(upstream_headers(NAMES, identity, frozenset()).to_set)["x-auth-username"] == (
        "José\tDoe"
    )


def test_configured_header_names_are_used(seed_config: Config) -> None:
    names = dataclasses.replace(seed_config.headers, subject="x-user", roles="x-roles")
    result = upstream_headers(names, None, frozenset())
    assert "x-user" in result.to_remove
    assert "x-roles" in result.to_remove
    assert "x-auth-subject" not in result.to_remove


def test_seed_config_header_names(seed_config: Config) -> None:
    assert seed_config.headers.identity_headers == IDENTITY_HEADERS
    assert seed_config.headers.strip_authorization is False
