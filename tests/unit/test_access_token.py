"""Local validation of JWT access tokens (the `jwt` strategies): one valid token, then tokens
each breaking one rule, signed in-test with keys made in-test. No network: keys come from a
typed fake KeySource."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz_server.core.identity import Inactive
from extauthz_server.identity.access_token import JwtRules, unverified_issuer, verify_access_token
from tests.unit.test_logout_token import (
    EC_KEY,
    OTHER_RSA_KEY,
    REMOVE,
    RSA_KEY,
    WEAK_RSA_KEY,
    FakeKeys,
    _hs256_with_public_pem,
    changed,
    compact,
    published_keys,
    rs256,
)

ISSUER = "https://sso.example.test/realms/demo"
NOW = 1_700_000_000.0
RULES = JwtRules()


def access_claims(**changes: object) -> dict[str, object]:
    """A Keycloak-shaped (full) access token's claims, with `changes` applied."""
    base: dict[str, object] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": ["ext-authz", "account"],
        "azp": "web-app",
        "typ": "Bearer",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 300,
        "scope": "openid email",
        "realm_access": {"roles": ["manager"]},
    }
    return changed(base, changes)


def token(
    payload: dict[str, object] | None = None,
    *,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
    header: dict[str, Any] | None = None,
) -> str:
    headers: dict[str, Any] = {"kid": kid} if kid is not None else {}
    headers |= header or {}
    return jwt.encode(access_claims() if payload is None else payload, key, alg, headers=headers)


async def verify(
    value: str, rules: JwtRules = RULES, keys: FakeKeys | None = None
) -> dict[str, object] | Inactive:
    result = await verify_access_token(
        value, published_keys() if keys is None else keys, rules, frozenset({ISSUER}), NOW
    )
    return result if isinstance(result, Inactive) else dict(result)


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [(RSA_KEY, "RS256", "rsa-1"), (RSA_KEY, "PS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")],
)
async def test_genuine_token_gives_its_claims(key: Any, alg: str, kid: str) -> None:
    claims = await verify(token(key=key, alg=alg, kid=kid))

    assert isinstance(claims, dict)
    assert claims["sub"] == "user-1"
    assert claims["realm_access"] == {"roles": ["manager"]}


def _unsigned(payload: dict[str, object]) -> str:
    return compact({"alg": "none", "kid": "rsa-1"}, json.dumps(payload).encode(), lambda _: b"")


def _alg_confusion() -> str:
    header: dict[str, object] = {"alg": "HS256", "kid": "rsa-1"}
    return compact(header, json.dumps(access_claims()).encode(), _hs256_with_public_pem)


def _tampered() -> str:
    header, _payload, signature = token().split(".")
    forged = base64.urlsafe_b64encode(json.dumps(access_claims(sub="admin")).encode()).decode()
    return f"{header}.{forged.rstrip('=')}.{signature}"


BROKEN: list[tuple[str, str, Inactive]] = [
    ("alg none", _unsigned(access_claims()), Inactive.BAD_JWT),
    ("HS256 signed with the public key", _alg_confusion(), Inactive.BAD_JWT),
    ("payload changed after signing", _tampered(), Inactive.BAD_JWT),
    ("signed by a key that is not published", token(key=OTHER_RSA_KEY), Inactive.BAD_JWT),
    ("kid nobody published", token(kid="rotated-away"), Inactive.BAD_JWT),
    (
        "RSA key too short",
        compact(
            {"alg": "RS256", "kid": "weak"},
            json.dumps(access_claims()).encode(),
            rs256(WEAK_RSA_KEY),
        ),
        Inactive.BAD_JWT,
    ),
    ("junk in the signature", token()[:-4] + "!!!!", Inactive.BAD_JWT),
    ("junk in the payload", token().replace(".", ".!", 1), Inactive.BAD_JWT),
    ("junk in the header", "!" + token(), Inactive.BAD_JWT),
    ("crit header", token(header={"crit": ["exp"], "exp": 1}), Inactive.BAD_JWT),
    ("key named by URL", token(header={"jku": "https://evil.test/keys"}), Inactive.BAD_JWT),
    ("JWE (five segments)", "a.b.c.d.e", Inactive.BAD_JWT),
    ("not a JWT", "opaque-token-value", Inactive.BAD_JWT),
    ("header not JSON", "bm90IGpzb24.e30.c2ln", Inactive.BAD_JWT),
    (
        "other issuer",
        token(access_claims(iss="https://evil.test/realms/demo")),
        Inactive.WRONG_ISSUER,
    ),
    ("no issuer", token(access_claims(iss=REMOVE)), Inactive.WRONG_ISSUER),
    ("expired", token(access_claims(exp=int(NOW) - 1)), Inactive.EXPIRED),
    ("no exp", token(access_claims(exp=REMOVE)), Inactive.MALFORMED),
    ("exp not a number", token(access_claims(exp="tomorrow")), Inactive.MALFORMED),
    ("exp true", token(access_claims(exp=True)), Inactive.MALFORMED),
    ("exp beyond any float", token(access_claims(exp=10**400)), Inactive.MALFORMED),
    ("not yet valid", token(access_claims(nbf=int(NOW) + 60)), Inactive.NOT_YET_VALID),
    ("ID token", token(access_claims(typ="ID")), Inactive.WRONG_TYPE),
    ("refresh token", token(access_claims(typ="Refresh")), Inactive.WRONG_TYPE),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(t, e) for _, t, e in BROKEN], ids=[n for n, _, _ in BROKEN]
)
async def test_token_breaking_a_rule_is_inactive(value: str, expected: Inactive) -> None:
    assert await verify(value) is expected


async def test_alg_outside_the_configured_list_is_refused_before_any_key_lookup() -> None:
    keys = published_keys()

    result = await verify(token(), JwtRules(algorithms=frozenset({"ES256"})), keys)

    assert result is Inactive.BAD_JWT
    assert keys.lookups == []


async def test_leeway_accepts_a_token_just_past_exp_and_nbf() -> None:
    lenient = JwtRules(leeway_s=30)

    assert isinstance(await verify(token(access_claims(exp=int(NOW) - 20)), lenient), dict)
    assert isinstance(await verify(token(access_claims(nbf=int(NOW) + 20)), lenient), dict)
    assert await verify(token(access_claims(exp=int(NOW) - 31)), lenient) is Inactive.EXPIRED


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [("ext-authz", True), (["account", "ext-authz"], True), ("account", False), (REMOVE, False)],
)
async def test_audience_is_checked_when_configured(aud: object, accepted: bool) -> None:
    rules = JwtRules(audiences=frozenset({"ext-authz"}))

    result = await verify(token(access_claims(aud=aud)), rules)

    assert isinstance(result, dict) if accepted else result is Inactive.WRONG_AUDIENCE


async def test_audience_is_not_checked_when_not_configured() -> None:
    assert isinstance(await verify(token(access_claims(aud="someone-else"))), dict)


@pytest.mark.parametrize(("typ", "accepted"), [("at+jwt", True), ("AT+JWT", True), ("JWT", False)])
async def test_header_type_is_checked_when_configured(typ: str, accepted: bool) -> None:
    rules = JwtRules(header_types=frozenset({"at+jwt"}))

    result = await verify(token(header={"typ": typ}), rules)

    assert isinstance(result, dict) if accepted else result is Inactive.WRONG_TYPE


def test_unverified_issuer_reads_iss_without_verifying() -> None:
    forged = token(key=OTHER_RSA_KEY)

    assert unverified_issuer(forged) == ISSUER
    assert unverified_issuer("opaque") is None
    assert unverified_issuer("a.b.c") is None
    numeric_issuer = compact(
        {"alg": "RS256"}, json.dumps(access_claims(iss=42)).encode(), rs256(RSA_KEY)
    )
    assert unverified_issuer(numeric_issuer) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_inactive_never_an_error(value: str) -> None:
    assert asyncio.run(verify(value)) in set(Inactive)


async def test_rs256_token_signed_by_hand_verifies() -> None:
    # The same signing input pyjwt would produce, built by hand: the verifier does not
    # depend on pyjwt's encoder quirks.
    value = compact(
        {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"},
        json.dumps(access_claims()).encode(),
        rs256(RSA_KEY),
    )

    assert isinstance(await verify(value), dict)
