"""JWT access token validation (RFC 7519, RFC 8725 best practices, RFC 9068 where it applies).

Pure: signing keys come through `KeySource`, the time through `now`. Every way a token can
fail is an `Inactive` value; only "the keys cannot be read" raises (ProviderUnavailable),
because that is our failure, not the token's.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from extauthz_server.core.identity import ACCESS_TOKEN_TYPES, Inactive, audience_of, claim_time
from extauthz_server.core.strict_json import loads_strict
from extauthz_server.identity.signing_keys import (
    ALLOWED_ALGS,
    KeyNotFound,
    KeysAtHand,
    KeySource,
)

# The algorithms a provider may use unless `provider.jwt.algorithms` narrows them. No "none"
# and no HS*: a shared secret cannot be published, and HS256 "signed" with a public key
# from the JWKS is the classic algorithm-confusion forgery.
DEFAULT_ALGORITHMS = ALLOWED_ALGS

# RFC 7515 §2: base64url without padding; some issuers add the padding anyway.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


@dataclass(frozen=True, slots=True)
class JwtRules:
    """What a provider's access tokens must satisfy beyond a valid signature."""

    algorithms: frozenset[str] = DEFAULT_ALGORITHMS
    leeway_s: float = 0.0
    # Checked only when not empty: one of these must be in `aud`.
    audiences: frozenset[str] = frozenset()
    # Checked only when not empty: the JOSE header `typ`, compared case-insensitively
    # (for instance "at+jwt", RFC 9068 §2.1).
    header_types: frozenset[str] = frozenset()


async def verify_access_token(
    token: str,
    keys: KeySource,
    rules: JwtRules,
    issuers: frozenset[str],
    now: float,
) -> Mapping[str, object] | Inactive:
    """The claims of a genuine, current access token from one of `issuers`, or why not.

    The caller has already bounded the token's size (limits.max_token_bytes).
    """
    header = _usable_header(token, rules)
    if isinstance(header, Inactive):
        return header
    alg, kid, _typ = header
    try:
        key = await keys.key_for(kid, alg)
    except KeyNotFound:
        return Inactive.BAD_JWT
    return _verified(token, key, alg, rules, issuers, now)


def verify_access_token_at_hand(
    token: str,
    keys: KeysAtHand,
    rules: JwtRules,
    issuers: frozenset[str],
    now: float,
) -> Mapping[str, object] | Inactive | None:
    """As `verify_access_token` when the signing key is already known, with no waiting;
    None when the key would have to be fetched first."""
    header = _usable_header(token, rules)
    if isinstance(header, Inactive):
        return header
    alg, kid, _typ = header
    key = keys.key_at_hand(kid, alg)
    if key is None:
        return None
    return _verified(token, key, alg, rules, issuers, now)


def _usable_header(token: str, rules: JwtRules) -> Header | Inactive:
    header = _header(token)
    rejected = _screen_header(header, rules)
    if rejected is not None or header is None:
        return rejected or Inactive.BAD_JWT
    return header


def _verified(
    token: str, key: jwt.PyJWK, alg: str, rules: JwtRules, issuers: frozenset[str], now: float
) -> Mapping[str, object] | Inactive:
    claims = _verified_claims(token, key, alg)
    if claims is None:
        return Inactive.BAD_JWT
    return _check_claims(claims, rules, issuers, now)


def screen_access_token(token: str, rules: JwtRules) -> Inactive | None:
    """Why `token` cannot be a valid access token, judged from its shape and header alone
    (no key, no signature), or None when only verification can tell: cheap enough to run
    before any cache lookup."""
    return _screen_header(_header(token), rules)


def _screen_header(header: Header | None, rules: JwtRules) -> Inactive | None:
    if header is None:
        return Inactive.BAD_JWT
    alg, _kid, typ = header
    if alg not in rules.algorithms:
        return Inactive.BAD_JWT
    if rules.header_types and (typ is None or typ.lower() not in rules.header_types):
        return Inactive.WRONG_TYPE
    return None


def unverified_issuer(token: str) -> str | None:
    """The `iss` a JWT claims, read without verifying anything: only good enough to pick
    which provider will then verify the token."""
    payload = unverified_claims(token)
    issuer = payload.get("iss") if payload is not None else None
    return issuer if isinstance(issuer, str) else None


def unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, unverified (for choosing a provider, or explaining a refusal);
    None when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16 * 1024:
        return None
    return _json_segment(parts[1])


Header = tuple[str, str | None, str | None]
# Header segments already read: every token of one signing key carries the same header
# text, so it is decoded once, not twice per token (screening, then verification).
_HEADERS: dict[str, Header | None] = {}
MAX_KEPT_HEADERS = 256


def _header(token: str) -> Header | None:
    if not token.isascii() or token.count(".") != 2:
        # Five segments would be a JWE: encrypted access tokens are not supported.
        return None
    header_segment = token.split(".", 1)[0]
    if header_segment in _HEADERS:
        return _HEADERS[header_segment]
    header = _read_header(header_segment)
    if len(_HEADERS) >= MAX_KEPT_HEADERS:
        _HEADERS.clear()
    _HEADERS[header_segment] = header
    return header


def _read_header(header_segment: str) -> Header | None:
    if _BASE64URL.fullmatch(header_segment) is None:
        return None
    header = _json_segment(header_segment)
    if header is None:
        return None
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        return None
    if "crit" in header or "b64" in header or "jku" in header or "x5u" in header:
        # No JWS extension is understood (RFC 7515 §4.1.11), and keys named by URL in the
        # token itself are never fetched.
        return None
    if kid is not None and not isinstance(kid, str):
        return None
    if typ is not None and not isinstance(typ, str):
        return None
    return alg, kid, typ


def _json_segment(segment: str) -> dict[str, Any] | None:
    try:
        document = loads_strict(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _verified_claims(token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any] | None:
    """The payload of `token` if `key` signed it with `alg`, else None.

    The signature is checked on the token's own text with the key's algorithm, as PyJWS
    does, but without its decoding of every segment a second time, which costs more than
    the RSA check itself.
    """
    head, payload, signature = token.split(".")
    if alg != key.algorithm_name:
        return None
    if _BASE64URL.fullmatch(payload) is None or _BASE64URL.fullmatch(signature) is None:
        return None
    algorithm = key.Algorithm
    try:
        prepared = algorithm.prepare_key(key.key)
        if algorithm.check_key_length(prepared) is not None:
            return None  # an RSA key under 2048 bits, or the like
        genuine = algorithm.verify(f"{head}.{payload}".encode("ascii"), prepared, _b64(signature))
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    if not genuine:
        return None
    try:
        claims = loads_strict(_b64(payload))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4))


def _check_claims(
    claims: dict[str, Any], rules: JwtRules, issuers: frozenset[str], now: float
) -> Mapping[str, object] | Inactive:
    if claims.get("iss") not in issuers:
        return Inactive.WRONG_ISSUER
    expires_at = claim_time(claims.get("exp"))
    if expires_at is None:
        # An access token without a usable exp would never expire.
        return Inactive.MALFORMED
    if expires_at + rules.leeway_s <= now:
        return Inactive.EXPIRED
    if "nbf" in claims:
        not_before = claim_time(claims["nbf"])
        if not_before is None:
            return Inactive.MALFORMED
        if not_before - rules.leeway_s > now:
            return Inactive.NOT_YET_VALID
    if rules.audiences and not rules.audiences.intersection(audience_of(claims.get("aud"))):
        return Inactive.WRONG_AUDIENCE
    # Keycloak signs ID tokens ("ID") with the same keys as access tokens ("Bearer", or
    # "DPoP" when bound to a proof key); an ID token is not a credential for an API.
    token_type = claims.get("typ")
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() not in ACCESS_TOKEN_TYPES
    ):
        return Inactive.WRONG_TYPE
    return claims
