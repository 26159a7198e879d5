"""identity_from_introspection: strict RFC 7662 reading of Keycloak introspection answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extauthz_server.core.identity import (
    EXPIRY_SKEW_SECONDS,
    Confirmation,
    Identity,
    Inactive,
    identity_from_introspection,
)
from extauthz_server.core.roles import DEFAULT_ROLE_CLAIMS, ClaimPath

Sample = Callable[[str], dict[str, object]]

CLAIMS = tuple(ClaimPath.compile(template, "ext-authz") for template in DEFAULT_ROLE_CLAIMS)
NOW = 1767225700.0  # between iat (…600) and exp (…900) of the samples
EXP = 1767225900
ABSENT = object()  # marks a field to leave out of the document


def minimal(**overrides: object) -> dict[str, object]:
    """The smallest document that is an acceptable bearer token, with fields replaced."""
    document: dict[str, object] = {
        "active": True,
        "token_type": "Bearer",
        "exp": EXP,
        "sub": "subject-1",
    }
    for key, value in overrides.items():
        if value is ABSENT:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def parse(document: dict[str, object], now: float = NOW) -> Identity | Inactive:
    return identity_from_introspection(document, CLAIMS, now)


def identity_of(document: dict[str, object], now: float = NOW) -> Identity:
    result = parse(document, now)
    assert isinstance(result, Identity), result
    return result


def test_keycloak_active_sample_gives_full_identity(introspection_sample: Sample) -> None:
    identity = identity_of(introspection_sample("active"))
    assert identity == Identity(
        subject="a292fb04-15a2-459b-9b29-3bce996095a0",
        username="alice",
        email="alice@example.com",
        client_id="web-app",
        scopes=frozenset({"openid", "email", "profile"}),
        provider_roles=frozenset(
            {
                "default-roles-demo",
                "offline_access",
                "admin",
                "uma_authorization",
                "orders.read",
                "orders.write",
            }
        ),
        expires_at=1767225900.0,
        session_id="63d668f2-0fb9-4e92-ac40-510569fdd8b2",
        audience=("ext-authz", "account"),
    )


def test_keycloak_service_account_sample_has_no_email_or_session(
    introspection_sample: Sample,
) -> None:
    identity = identity_of(introspection_sample("service-account"))
    assert identity.subject == "fe0e4d8b-0701-4234-ac54-5ff4f4487a4f"
    assert identity.username == "service-account-reporting-job"
    assert identity.client_id == "reporting-job"
    assert identity.email is None
    assert identity.session_id is None
    assert identity.provider_roles >= {"orders.read"}


def test_keycloak_inactive_sample_is_not_active(introspection_sample: Sample) -> None:
    assert parse(introspection_sample("inactive")) is Inactive.NOT_ACTIVE


@pytest.mark.parametrize(
    "active",
    [ABSENT, False, "true", "True", 1, 1.0, [True], {"active": True}, None],
    ids=[
        "missing",
        "false",
        "string-true",
        "string-capital-true",
        "one",
        "float-one",
        "list",
        "object",
        "null",
    ],
)
def test_only_json_true_is_active(active: object) -> None:
    assert parse(minimal(active=active)) is Inactive.NOT_ACTIVE


# (token_type, typ, accepted)
TOKEN_TYPES: list[tuple[object, object, bool]] = [
    ("Bearer", ABSENT, True),
    ("bearer", ABSENT, True),
    ("BEARER", ABSENT, True),
    (ABSENT, "Bearer", True),
    (ABSENT, "bearer", True),
    ("Refresh", ABSENT, False),
    ("ID", ABSENT, False),
    ("Offline", ABSENT, False),
    (ABSENT, "Refresh", False),
    (ABSENT, "ID", False),
    (ABSENT, "Offline", False),
    ("Refresh", "Bearer", False),
    ("", "Bearer", True),
    (ABSENT, ABSENT, False),
    ("", ABSENT, False),
    ("Bearer ", ABSENT, False),
    (7, ABSENT, False),
]
TOKEN_TYPE_IDS = [
    "bearer",
    "lower-case-bearer",
    "upper-case-bearer",
    "typ-bearer",
    "typ-lower-case-bearer",
    "refresh",
    "id",
    "offline",
    "typ-refresh",
    "typ-id",
    "typ-offline",
    "token-type-wins-over-typ",
    "empty-token-type-falls-back-to-typ",
    "neither",
    "empty",
    "trailing-space",
    "number",
]


@pytest.mark.parametrize(("token_type", "typ", "accepted"), TOKEN_TYPES, ids=TOKEN_TYPE_IDS)
def test_token_type_must_be_bearer(token_type: object, typ: object, accepted: bool) -> None:
    result = parse(minimal(token_type=token_type, typ=typ))
    if accepted:
        assert isinstance(result, Identity)
    else:
        assert result is Inactive.NOT_BEARER


def test_a_dpop_token_carries_the_key_it_is_bound_to() -> None:
    # As Keycloak 26.7.3 introspects a DPoP-bound token (kc-jkt-type is its own member).
    cnf = {"jkt": "CW9117-thumbprint", "kc-jkt-type": "DPoP"}
    result = parse(minimal(token_type="DPoP", typ="DPoP", cnf=cnf))
    assert isinstance(result, Identity)
    assert result.confirmation == Confirmation(jkt="CW9117-thumbprint")


def test_a_bearer_token_bound_to_a_certificate_carries_its_thumbprint() -> None:
    result = parse(minimal(cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}))
    assert isinstance(result, Identity)
    assert result.confirmation == Confirmation(
        x5t_s256="bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"
    )


def test_an_unbound_token_has_no_confirmation() -> None:
    result = parse(minimal())
    assert isinstance(result, Identity)
    assert result.confirmation is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"token_type": "DPoP"},
        {"token_type": "DPoP", "cnf": {}},
        {"token_type": "DPoP", "cnf": {"x5t#S256": "abc"}},
        {"cnf": "jkt"},
        {"cnf": {"jkt": 5}},
        {"cnf": {"jkt": ""}},
        {"cnf": {"jwk": {"kty": "EC"}}},
        {"cnf": {"kc-jkt-type": "DPoP"}},
    ],
    ids=[
        "dpop-without-cnf",
        "dpop-with-empty-cnf",
        "dpop-bound-to-a-certificate-only",
        "cnf-not-an-object",
        "jkt-not-a-string",
        "jkt-empty",
        "bound-to-a-key-we-cannot-check",
        "only-keycloaks-own-member",
    ],
)
def test_a_binding_that_cannot_be_checked_is_refused(overrides: dict[str, object]) -> None:
    assert parse(minimal(**overrides)) is Inactive.MALFORMED


@pytest.mark.parametrize(
    ("exp", "expected"),
    [
        (NOW - 3600, Inactive.EXPIRED),
        (NOW, Inactive.EXPIRED),
        (NOW + 1, Inactive.EXPIRED),
        (NOW + EXPIRY_SKEW_SECONDS, Inactive.EXPIRED),
        (NOW + EXPIRY_SKEW_SECONDS + 0.001, None),
        (NOW + 3600, None),
        (int(NOW) + 3600, None),
    ],
    ids=[
        "in-the-past",
        "now",
        "within-skew",
        "exactly-skew",
        "just-beyond-skew",
        "future",
        "integer-future",
    ],
)
def test_expiry_is_checked_against_injected_now_with_skew(
    exp: float, expected: Inactive | None
) -> None:
    result = parse(minimal(exp=exp))
    if expected is None:
        assert isinstance(result, Identity)
        assert result.expires_at == float(exp)
    else:
        assert result is expected


def test_keycloak_sample_is_expired_once_now_passes_exp(introspection_sample: Sample) -> None:
    assert parse(introspection_sample("active"), now=EXP + 1.0) is Inactive.EXPIRED


@pytest.mark.parametrize(
    "exp",
    ["1767225900", None, True, False, [EXP], {"exp": EXP}],
    ids=["string", "null", "true", "false", "list", "object"],
)
def test_malformed_exp_is_malformed(exp: object) -> None:
    assert parse(minimal(exp=exp)) is Inactive.MALFORMED


def test_nan_exp_is_malformed() -> None:
    assert parse(minimal(exp=float("nan"))) is Inactive.MALFORMED


def test_missing_exp_is_accepted_without_expiry() -> None:
    identity = identity_of(minimal(exp=ABSENT))
    assert identity.expires_at is None


def test_not_active_is_reported_before_other_problems() -> None:
    assert parse({"active": False, "token_type": "Refresh", "exp": "x"}) is Inactive.NOT_ACTIVE


def test_token_type_is_checked_before_expiry() -> None:
    assert parse(minimal(token_type="Refresh", exp=NOW - 100)) is Inactive.NOT_BEARER


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        ("ext-authz", ("ext-authz",)),
        (["ext-authz", "account"], ("ext-authz", "account")),
        ([], ()),
        (ABSENT, ()),
        (["ext-authz", 5, None], ("ext-authz",)),
        (7, ()),
    ],
    ids=["string", "list", "empty-list", "missing", "non-strings-dropped", "number"],
)
def test_audience_is_string_or_list(aud: object, expected: tuple[str, ...]) -> None:
    assert identity_of(minimal(aud=aud)).audience == expected


# (fields, expected subject)
SUBJECTS: list[tuple[dict[str, object], str | Inactive]] = [
    ({"sub": "s-1", "preferred_username": "alice", "client_id": "web"}, "s-1"),
    ({"sub": ABSENT, "preferred_username": "alice", "client_id": "web"}, "alice"),
    ({"sub": "", "username": "alice", "client_id": "web"}, "alice"),
    ({"sub": ABSENT, "client_id": "web"}, "web"),
    ({"sub": ABSENT, "azp": "web"}, "web"),
    ({"sub": 12345, "azp": "web"}, "web"),
    ({"sub": ABSENT}, Inactive.NO_SUBJECT),
    ({"sub": "", "username": "", "client_id": ""}, Inactive.NO_SUBJECT),
]
SUBJECT_IDS = [
    "sub",
    "preferred-username-when-no-sub",
    "username-when-sub-empty",
    "client-id-when-no-user",
    "azp-when-no-client-id",
    "non-string-sub-ignored",
    "nothing",
    "all-empty",
]


@pytest.mark.parametrize(("fields", "expected"), SUBJECTS, ids=SUBJECT_IDS)
def test_subject_falls_back_to_username_then_client(
    fields: dict[str, object], expected: str | Inactive
) -> None:
    result = parse(minimal(**fields))
    if isinstance(expected, Inactive):
        assert result is expected
    else:
        assert isinstance(result, Identity)
        assert result.subject == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"preferred_username": "alice", "username": "other"}, "alice"),
        ({"username": "alice"}, "alice"),
        ({"preferred_username": "", "username": "alice"}, "alice"),
        ({"preferred_username": 5, "username": "alice"}, "alice"),
        ({}, None),
    ],
    ids=["preferred-wins", "username", "empty-preferred", "non-string-preferred", "none"],
)
def test_username_is_preferred_username_else_username(
    fields: dict[str, object], expected: str | None
) -> None:
    assert identity_of(minimal(**fields)).username == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"client_id": "web", "azp": "other"}, "web"),
        ({"azp": "web"}, "web"),
        ({"client_id": "", "azp": "web"}, "web"),
        ({}, None),
    ],
    ids=["client-id-wins", "azp", "empty-client-id", "none"],
)
def test_client_id_is_client_id_else_azp(fields: dict[str, object], expected: str | None) -> None:
    assert identity_of(minimal(**fields)).client_id == expected


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid email profile", frozenset({"openid", "email", "profile"})),
        ("  openid   email ", frozenset({"openid", "email"})),
        ("openid openid", frozenset({"openid"})),
        ("", frozenset()),
        (ABSENT, frozenset()),
        (["openid", "email"], frozenset()),
    ],
    ids=["three", "extra-spaces", "duplicates", "empty", "missing", "list-is-not-rfc-7662"],
)
def test_scopes_are_split_on_spaces(scope: object, expected: frozenset[str]) -> None:
    assert identity_of(minimal(scope=scope)).scopes == expected


def test_email_and_session_id_are_read_when_strings() -> None:
    identity = identity_of(minimal(email="a@example.com", sid="session-1"))
    assert (identity.email, identity.session_id) == ("a@example.com", "session-1")
    identity = identity_of(minimal(email=True, sid=3))
    assert (identity.email, identity.session_id) == (None, None)


def test_roles_come_only_from_configured_claims(introspection_sample: Sample) -> None:
    document = introspection_sample("bob-manager")
    only_realm = (ClaimPath.compile("realm_access.roles", "ext-authz"),)
    identity = identity_from_introspection(document, only_realm, NOW)
    assert isinstance(identity, Identity)
    assert identity.provider_roles == {
        "default-roles-demo",
        "offline_access",
        "manager",
        "uma_authorization",
    }
    groups = identity_from_introspection(document, (ClaimPath.compile("groups", "x"),), NOW)
    assert isinstance(groups, Identity)
    assert groups.provider_roles == {"/managers", "/orgs/acme"}
