"""Logout token verification (OIDC Back-Channel Logout 1.0 §2.4/§2.6): one table of valid
tokens, one of tokens each breaking one rule, signed in-test with keys made in-test."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import get_default_algorithms
from jwt.utils import base64url_encode

from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.signing_keys import KeyNotFound
from extauthz_server.revocation.logout_token import (
    BACKCHANNEL_LOGOUT_EVENT,
    MAX_LOGOUT_TOKEN_BYTES,
    LogoutEvent,
    LogoutTokenError,
    verify_logout_token,
)

ISSUER = "https://sso.example.test/realms/demo"
CLIENT = "ext-authz"
AUDIENCES = frozenset({CLIENT})
NOW = 1_700_000_000.0
MAX_AGE_S = 300.0
LEEWAY_S = 30.0
REMOVE = object()

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# Deliberately weak: verification must refuse it.
WEAK_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _public_jwk(private_key: Any, alg: str) -> jwt.PyJWK:
    algorithm = get_default_algorithms()[alg]
    return jwt.PyJWK(algorithm.to_jwk(private_key.public_key(), as_dict=True), algorithm=alg)


@dataclass
class FakeKeys:
    """A KeySource holding keys by (kid, alg), recording every lookup."""

    keys: dict[tuple[str | None, str], jwt.PyJWK] = field(default_factory=dict)
    lookups: list[tuple[str | None, str]] = field(default_factory=list)

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        self.lookups.append((kid, alg))
        try:
            return self.keys[(kid, alg)]
        except KeyError:
            raise KeyNotFound(kid, alg) from None


def published_keys() -> FakeKeys:
    return FakeKeys(
        {
            ("rsa-1", "RS256"): _public_jwk(RSA_KEY, "RS256"),
            ("rsa-1", "PS256"): _public_jwk(RSA_KEY, "PS256"),
            ("ec-1", "ES256"): _public_jwk(EC_KEY, "ES256"),
            ("weak", "RS256"): _public_jwk(WEAK_RSA_KEY, "RS256"),
        }
    )


def claims(**changes: object) -> dict[str, object]:
    """A Keycloak-shaped logout token claims set, with `changes` applied (REMOVE deletes)."""
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "iat": int(NOW) - 5,
        "exp": int(NOW) + 120,
        "jti": "e7f1c6a2-logout",
        "sub": "user-1",
        "sid": "session-1",
        "typ": "Logout",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}, "revoke_offline_access": True},
    }
    return changed(base, changes)


def changed(base: dict[str, object], changes: dict[str, object]) -> dict[str, object]:
    """`base` with `changes` applied: a value replaces, REMOVE deletes."""
    for name, value in changes.items():
        if value is REMOVE:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def signed(
    payload: dict[str, object] | None = None,
    *,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str = "rsa-1",
    typ: str | None = "logout+jwt",
) -> str:
    """A token signed by pyjwt's own encoder."""
    headers: dict[str, Any] = {"kid": kid, "typ": typ}
    return jwt.encode(claims() if payload is None else payload, key, algorithm=alg, headers=headers)


def compact(header: dict[str, object], payload: bytes, sign: Callable[[bytes], bytes]) -> str:
    """A hand-built compact JWS, for what pyjwt refuses to produce."""
    signing_input = base64url_encode(json.dumps(header).encode()) + b"." + base64url_encode(payload)
    return (signing_input + b"." + base64url_encode(sign(signing_input))).decode()


def rs256(private_key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda message: get_default_algorithms()["RS256"].sign(message, private_key)


def _hs256_with_public_pem(message: bytes) -> bytes:
    # Algorithm confusion: the attacker uses the published RSA public key as an HMAC secret.
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hmac.new(pem, message, hashlib.sha256).digest()


def _tampered(token: str) -> str:
    header, _payload, signature = token.split(".")
    forged = base64url_encode(json.dumps(claims(sub="admin")).encode()).decode()
    return f"{header}.{forged}.{signature}"


async def verify(token: str, keys: FakeKeys | None = None) -> LogoutEvent:
    return await verify_logout_token(
        token,
        published_keys() if keys is None else keys,
        issuer=ISSUER,
        audiences=AUDIENCES,
        now=NOW,
        max_age_s=MAX_AGE_S,
        leeway_s=LEEWAY_S,
    )


VALID_CASES: list[tuple[str, Callable[[], str], LogoutEvent]] = [
    ("sid_and_sub", lambda: signed(), LogoutEvent(ISSUER, "user-1", "session-1")),
    ("sid_only", lambda: signed(claims(sub=REMOVE)), LogoutEvent(ISSUER, None, "session-1")),
    ("sub_only", lambda: signed(claims(sid=REMOVE)), LogoutEvent(ISSUER, "user-1", None)),
    (
        "aud_array_containing_ours",
        lambda: signed(claims(aud=["account", CLIENT])),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    ("typ_absent", lambda: signed(typ=None), LogoutEvent(ISSUER, "user-1", "session-1")),
    ("typ_jwt", lambda: signed(typ="JWT"), LogoutEvent(ISSUER, "user-1", "session-1")),
    (
        "typ_application_logout_jwt",
        lambda: signed(typ="application/logout+jwt"),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "exp_absent",
        lambda: signed(claims(exp=REMOVE)),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "iat_exactly_max_age_old",
        lambda: signed(claims(iat=NOW - MAX_AGE_S)),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "iat_ahead_within_leeway",
        lambda: signed(claims(iat=NOW + LEEWAY_S)),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "exp_just_passed_within_leeway",
        lambda: signed(claims(exp=NOW - LEEWAY_S + 1)),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "ps256",
        lambda: signed(alg="PS256"),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
    (
        "es256",
        lambda: signed(key=EC_KEY, alg="ES256", kid="ec-1"),
        LogoutEvent(ISSUER, "user-1", "session-1"),
    ),
]


@pytest.mark.parametrize(
    ("make_token", "expected"),
    [case[1:] for case in VALID_CASES],
    ids=[case[0] for case in VALID_CASES],
)
async def test_valid_logout_token_gives_event(
    make_token: Callable[[], str], expected: LogoutEvent
) -> None:
    assert await verify(make_token()) == expected


def _oversized() -> str:
    return signed(claims(padding="x" * MAX_LOGOUT_TOKEN_BYTES))


REJECTED_CASES: list[tuple[str, Callable[[], str], str]] = [
    # header and signature
    ("alg_none", lambda: compact({"alg": "none"}, json.dumps(claims()).encode(), bytes), "bad_alg"),
    (
        "hs256_with_public_key_pem_as_secret",
        lambda: compact(
            {"alg": "HS256", "kid": "rsa-1"}, json.dumps(claims()).encode(), _hs256_with_public_pem
        ),
        "bad_alg",
    ),
    (
        "alg_missing",
        lambda: compact({"kid": "rsa-1"}, json.dumps(claims()).encode(), rs256(RSA_KEY)),
        "bad_alg",
    ),
    ("typ_access_token", lambda: signed(typ="at+jwt"), "bad_typ"),
    (
        "typ_not_a_string",
        lambda: compact(
            {"alg": "RS256", "kid": "rsa-1", "typ": 1},
            json.dumps(claims()).encode(),
            rs256(RSA_KEY),
        ),
        "bad_typ",
    ),
    (
        "unencoded_payload_extension",
        lambda: compact(
            {"alg": "RS256", "kid": "rsa-1", "b64": True},
            json.dumps(claims()).encode(),
            rs256(RSA_KEY),
        ),
        "malformed",
    ),
    (
        "crit_header",
        lambda: compact(
            {"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1},
            json.dumps(claims()).encode(),
            rs256(RSA_KEY),
        ),
        "malformed",
    ),
    (
        "kid_not_a_string",
        lambda: compact({"alg": "RS256", "kid": 7}, json.dumps(claims()).encode(), rs256(RSA_KEY)),
        "malformed",
    ),
    ("signed_by_another_key", lambda: signed(key=OTHER_RSA_KEY), "bad_signature"),
    ("payload_tampered", lambda: _tampered(signed()), "bad_signature"),
    ("unknown_kid", lambda: signed(kid="rotated-away"), "unknown_key"),
    (
        "rsa_key_below_2048_bits",
        lambda: compact(
            {"alg": "RS256", "kid": "weak"}, json.dumps(claims()).encode(), rs256(WEAK_RSA_KEY)
        ),
        "bad_signature",
    ),
    # size and shape
    ("oversized", _oversized, "too_large"),
    ("garbage", lambda: "not a token", "malformed"),
    ("empty", lambda: "", "malformed"),
    ("three_empty_segments", lambda: "..", "malformed"),
    ("bad_base64", lambda: "e30.e30.!!!", "malformed"),
    ("non_ascii", lambda: signed() + "é", "malformed"),
    ("jwe_five_segments", lambda: "a.b.c.d.e", "malformed"),
    (
        "header_not_json",
        lambda: base64url_encode(b"{alg").decode() + ".e30.AAAA",
        "malformed",
    ),
    (
        "signed_payload_not_json",
        lambda: compact({"alg": "RS256", "kid": "rsa-1"}, b"not json", rs256(RSA_KEY)),
        "malformed",
    ),
    (
        "signed_payload_deeply_nested",
        lambda: compact({"alg": "RS256", "kid": "rsa-1"}, b"[" * 5000, rs256(RSA_KEY)),
        "malformed",
    ),
    (
        "signed_payload_an_array",
        lambda: compact({"alg": "RS256", "kid": "rsa-1"}, b"[1, 2]", rs256(RSA_KEY)),
        "malformed",
    ),
    # claims
    ("wrong_iss", lambda: signed(claims(iss="https://evil.test/realms/demo")), "wrong_issuer"),
    ("iss_missing", lambda: signed(claims(iss=REMOVE)), "wrong_issuer"),
    ("aud_other_client", lambda: signed(claims(aud="account")), "wrong_audience"),
    ("aud_array_without_ours", lambda: signed(claims(aud=["a", "b"])), "wrong_audience"),
    ("aud_empty_array", lambda: signed(claims(aud=[])), "wrong_audience"),
    ("aud_missing", lambda: signed(claims(aud=REMOVE)), "wrong_audience"),
    ("aud_a_number", lambda: signed(claims(aud=7)), "malformed"),
    ("iat_missing", lambda: signed(claims(iat=REMOVE)), "no_iat"),
    ("iat_too_old", lambda: signed(claims(iat=NOW - MAX_AGE_S - LEEWAY_S - 1)), "stale"),
    ("iat_in_future", lambda: signed(claims(iat=NOW + LEEWAY_S + 1)), "issued_in_future"),
    ("iat_a_string", lambda: signed(claims(iat=str(int(NOW)))), "malformed"),
    ("iat_a_bool", lambda: signed(claims(iat=True)), "malformed"),
    ("iat_nan", lambda: signed(claims(iat=float("nan"))), "malformed"),
    ("iat_out_of_float_range", lambda: signed(claims(iat=10**400)), "malformed"),
    ("expired", lambda: signed(claims(exp=NOW - LEEWAY_S)), "expired"),
    ("nbf_in_future", lambda: signed(claims(nbf=NOW + LEEWAY_S + 1)), "not_yet_valid"),
    ("events_missing", lambda: signed(claims(events=REMOVE)), "no_event"),
    ("events_an_array", lambda: signed(claims(events=[BACKCHANNEL_LOGOUT_EVENT])), "no_event"),
    ("events_without_logout", lambda: signed(claims(events={"other": {}})), "no_event"),
    (
        "logout_event_not_an_object",
        lambda: signed(claims(events={BACKCHANNEL_LOGOUT_EVENT: True})),
        "no_event",
    ),
    ("nonce_present", lambda: signed(claims(nonce="n-0S6_WzA2Mj")), "has_nonce"),
    ("nonce_null", lambda: signed(claims(nonce=None)), "has_nonce"),
    ("neither_sid_nor_sub", lambda: signed(claims(sid=REMOVE, sub=REMOVE)), "no_sid_or_sub"),
    ("sid_empty", lambda: signed(claims(sid="")), "malformed"),
    ("sub_a_number", lambda: signed(claims(sub=42)), "malformed"),
]


@pytest.mark.parametrize(
    ("make_token", "code"),
    [case[1:] for case in REJECTED_CASES],
    ids=[case[0] for case in REJECTED_CASES],
)
async def test_logout_token_breaking_a_rule_is_rejected(
    make_token: Callable[[], str], code: str
) -> None:
    with pytest.raises(LogoutTokenError) as caught:
        await verify(make_token())
    assert caught.value.code == code


@pytest.mark.parametrize(
    "token",
    [
        compact({"alg": "none"}, json.dumps(claims()).encode(), bytes),
        compact({"alg": "HS256", "kid": "rsa-1"}, b"{}", _hs256_with_public_pem),
        "x" * (MAX_LOGOUT_TOKEN_BYTES + 1),
    ],
    ids=["alg_none", "hs256", "oversized"],
)
async def test_rejected_before_any_key_lookup(token: str) -> None:
    keys = published_keys()
    with pytest.raises(LogoutTokenError):
        await verify(token, keys)
    assert keys.lookups == []


async def test_key_bound_to_another_alg_is_not_used() -> None:
    # A KeySource that hands back an ES256 key for an RS256 token must not verify it.
    keys = FakeKeys({("rsa-1", "RS256"): _public_jwk(EC_KEY, "ES256")})
    with pytest.raises(LogoutTokenError) as caught:
        await verify(signed(), keys)
    assert caught.value.code == "bad_alg"


async def test_key_lookup_gets_kid_and_alg_from_header() -> None:
    keys = published_keys()
    await verify(signed(key=EC_KEY, alg="ES256", kid="ec-1"), keys)
    assert keys.lookups == [("ec-1", "ES256")]


async def test_provider_unavailable_propagates_unchanged() -> None:
    class DownKeys:
        async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
            raise ProviderUnavailable("JWKS fetch timed out")

    with pytest.raises(ProviderUnavailable):
        await verify_logout_token(signed(), DownKeys(), ISSUER, AUDIENCES, now=NOW)


async def test_a_key_not_found_is_a_logout_token_error_with_bounded_message() -> None:
    with pytest.raises(LogoutTokenError) as caught:
        await verify(signed(kid="k" * 10_000))

    assert caught.value.code == "unknown_key"
    assert len(str(caught.value)) < 200


_JWS_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet=_JWS_ALPHABET, max_size=300)))
def test_arbitrary_input_is_rejected_with_logout_token_error(token: str) -> None:
    with pytest.raises(LogoutTokenError):
        asyncio.run(verify(token))
