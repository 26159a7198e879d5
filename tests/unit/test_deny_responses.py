"""Deny responses: fixed status, JSON body and RFC 6750 §3 WWW-Authenticate per Reason."""

from __future__ import annotations

import json

import pytest

from extauthz_server.core.decision import Decision, Denials, Reason

DENIALS = Denials("demo")
ALGS = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"

DENY_REASONS = [reason for reason in Reason if reason not in (Reason.ALLOWED, Reason.PUBLIC)]

# (reason, status, error, WWW-Authenticate or None)
TABLE: list[tuple[Reason, int, str, str | None]] = [
    (Reason.BAD_REQUEST, 400, "invalid_request", None),
    (Reason.NO_ROUTE, 403, "access_denied", None),
    (Reason.MISSING_TOKEN, 401, "unauthorized", 'Bearer realm="demo"'),
    (
        Reason.MALFORMED_TOKEN,
        401,
        "invalid_request",
        'Bearer realm="demo", error="invalid_request", '
        'error_description="The Authorization header is malformed"',
    ),
    (
        Reason.INVALID_TOKEN,
        401,
        "invalid_token",
        'Bearer realm="demo", error="invalid_token", '
        'error_description="The access token is invalid or expired"',
    ),
    (
        Reason.INVALID_DPOP_PROOF,
        401,
        "invalid_dpop_proof",
        f'DPoP algs="{ALGS}", realm="demo", error="invalid_dpop_proof", '
        'error_description="The DPoP proof is missing or invalid"',
    ),
    (
        Reason.INSUFFICIENT_ROLE,
        403,
        "insufficient_scope",
        'Bearer realm="demo", error="insufficient_scope", '
        'error_description="The caller lacks a required role or scope"',
    ),
    (
        Reason.CONDITION_FALSE,
        403,
        "insufficient_scope",
        'Bearer realm="demo", error="insufficient_scope", '
        'error_description="The request does not meet the route condition"',
    ),
    (Reason.CONDITION_ERROR, 403, "access_denied", None),
    (
        Reason.PERMISSION_DENIED,
        403,
        "insufficient_scope",
        'Bearer realm="demo", error="insufficient_scope", '
        'error_description="The caller lacks the permission for this resource"',
    ),
    (Reason.PERMISSION_ERROR, 403, "access_denied", None),
    (Reason.PROVIDER_UNAVAILABLE, 503, "temporarily_unavailable", None),
    (Reason.PROVIDER_REJECTED_CLIENT, 503, "temporarily_unavailable", None),
    (Reason.REPLAY_CHECK_UNAVAILABLE, 503, "temporarily_unavailable", None),
    (Reason.INTERNAL_ERROR, 503, "temporarily_unavailable", None),
]


def header(decision: Decision, name: str) -> str | None:
    values = [value for key, value in decision.response_headers if key == name]
    assert len(values) <= 1, values
    return values[0] if values else None


def test_table_covers_every_deny_reason() -> None:
    assert [row[0] for row in TABLE] == DENY_REASONS


@pytest.mark.parametrize(
    ("reason", "status", "error", "challenge"), TABLE, ids=[row[0].value for row in TABLE]
)
def test_deny_status_body_and_challenge(
    reason: Reason, status: int, error: str, challenge: str | None
) -> None:
    decision = DENIALS.deny(reason, route="r", subject="s")
    assert decision.allowed is False
    assert decision.status == status
    assert decision.reason is reason
    assert (decision.route, decision.subject) == ("r", "s")
    body = json.loads(decision.body)
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    assert header(decision, "content-type") == "application/json"
    assert header(decision, "www-authenticate") == challenge


@pytest.mark.parametrize("reason", DENY_REASONS, ids=[r.value for r in DENY_REASONS])
def test_deny_never_sets_upstream_headers_or_metadata(reason: Reason) -> None:
    decision = DENIALS.deny(reason)
    assert decision.upstream_headers == ()
    assert decision.headers_to_remove == ()
    assert {"subject", "roles", "client"}.isdisjoint(decision.metadata)
    assert decision.roles == ()


@pytest.mark.parametrize(
    ("scopes", "expected_scope"),
    [
        (frozenset({"orders:read"}), "orders:read"),
        (frozenset({"orders:write", "orders:read"}), "orders:read orders:write"),
    ],
    ids=["one-scope", "scopes-sorted-space-separated"],
)
def test_insufficient_scope_names_required_scopes(
    scopes: frozenset[str], expected_scope: str
) -> None:
    decision = DENIALS.deny(Reason.INSUFFICIENT_ROLE, required_scopes=scopes)
    assert decision.status == 403
    challenge = header(decision, "www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer realm="demo", error="insufficient_scope"')
    assert challenge.endswith(f'scope="{expected_scope}"')


def test_insufficient_role_without_scopes_has_no_scope_parameter() -> None:
    challenge = header(DENIALS.deny(Reason.INSUFFICIENT_ROLE), "www-authenticate")
    assert challenge is not None
    assert "scope=" not in challenge.replace("insufficient_scope", "")


@pytest.mark.parametrize(
    "reason",
    [Reason.MISSING_TOKEN, Reason.INVALID_TOKEN, Reason.NO_ROUTE],
    ids=["missing", "invalid", "no-route"],
)
def test_required_scopes_only_change_insufficient_role(reason: Reason) -> None:
    with_scopes = DENIALS.deny(reason, required_scopes=frozenset({"s"}))
    assert with_scopes == DENIALS.deny(reason)


@pytest.mark.parametrize(
    ("realm", "quoted"),
    [
        ("demo", '"demo"'),
        ('my "realm"', '"my \\"realm\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("with, comma", '"with, comma"'),
    ],
    ids=["plain", "quotes-escaped", "backslash-escaped", "comma-inside-quotes"],
)
def test_realm_is_a_quoted_string(realm: str, quoted: str) -> None:
    challenge = header(Denials(realm).deny(Reason.MISSING_TOKEN), "www-authenticate")
    assert challenge == f"Bearer realm={quoted}"


def test_deny_bodies_are_fixed_texts_not_request_data() -> None:
    decision = Denials("demo").deny(Reason.INVALID_TOKEN, route="secret-route", subject="alice")
    assert "secret-route" not in decision.body
    assert "alice" not in decision.body
    assert all("alice" not in value for _, value in decision.response_headers)
