"""Logout token verification (OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6).

Pure: signing keys come through `KeySource`, the time through `now`. Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from extauthz_server.errors import ExtAuthzError
from extauthz_server.identity.signing_keys import ALLOWED_ALGS, KeyNotFound, KeySource

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# A logout token carries a handful of short claims; Keycloak's are well under 2 KiB. The
# limit is checked before any base64 or JSON decoding, so an oversized body costs nothing.
MAX_LOGOUT_TOKEN_BYTES = 16 * 1024

# §2.4 recommends typ "logout+jwt" (RFC 8725 §3.11 explicit typing); Keycloak sends it in
# current releases and "JWT" in older ones. Media types compare case-insensitively, and the
# "application/" prefix may be omitted (RFC 7515 §4.1.9).
_ALLOWED_TYPS = frozenset({"jwt", "application/jwt", "logout+jwt", "application/logout+jwt"})

# Verification uses its own PyJWS that does not even register "none" or HS*, and turns a
# short RSA key into an error rather than a warning.
_JWS = jwt.PyJWS(algorithms=sorted(ALLOWED_ALGS), options={"enforce_minimum_key_length": True})

LogoutTokenCode = Literal[
    "too_large",
    "malformed",
    "bad_alg",
    "bad_typ",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "no_iat",
    "stale",
    "issued_in_future",
    "expired",
    "not_yet_valid",
    "no_event",
    "has_nonce",
    "no_sid_or_sub",
]


class LogoutTokenError(ExtAuthzError):
    """The logout token must be rejected (§2.6: answer 400). `code` names the failed rule;
    the message is for logs only and never contains claim values."""

    code: LogoutTokenCode

    def __init__(self, code: LogoutTokenCode, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class LogoutEvent:
    """A verified logout: end the session `session_id`, or, when it is None, every session
    of `subject` at `issuer` (§2.4)."""

    issuer: str
    subject: str | None
    session_id: str | None


async def verify_logout_token(
    token: str,
    keys: KeySource,
    issuer: str,
    audiences: frozenset[str],
    now: float,
    max_age_s: float = 300.0,
    leeway_s: float = 30.0,
) -> LogoutEvent:
    """Verify a logout token as §2.6 requires, or raise `LogoutTokenError`.

    `now` is wall-clock time in seconds since the epoch (the unit of `iat` and `exp`).
    `ProviderUnavailable` from `keys` propagates: it is our fault, not the token's.
    Replay detection by `jti` (§2.6, optional) is left to the caller.
    """
    alg, kid = _read_header(token)
    try:
        key = await keys.key_for(kid, alg)
    except KeyNotFound as exc:
        raise LogoutTokenError("unknown_key", str(exc)) from exc
    claims = _verified_claims(token, key, alg)
    return _logout_event(claims, issuer, audiences, now, max_age_s, leeway_s)


def _read_header(token: str) -> tuple[str, str | None]:
    if len(token) > MAX_LOGOUT_TOKEN_BYTES:
        raise LogoutTokenError("too_large", f"token is {len(token)} characters")
    if not token.isascii() or token.count(".") != 2:
        # Five segments would be a JWE: encrypted logout tokens are not supported.
        raise LogoutTokenError("malformed", "not a compact JWS")
    try:
        header = _JWS.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise LogoutTokenError("malformed", f"unreadable JWS: {type(exc).__name__}") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        raise LogoutTokenError("bad_alg", "alg is not an allowed asymmetric algorithm")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ALLOWED_TYPS):
        raise LogoutTokenError("bad_typ", "typ is not logout+jwt or JWT")
    if "crit" in header or "b64" in header:
        # We understand no JWS extension, so a critical one must be refused (RFC 7515 §4.1.11).
        raise LogoutTokenError("malformed", "unsupported JWS extension")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise LogoutTokenError("malformed", "kid is not a string")
    return alg, kid


def _verified_claims(token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
    try:
        decoded = _JWS.decode_complete(token, key=key, algorithms=[alg])
    except jwt.InvalidSignatureError as exc:
        raise LogoutTokenError("bad_signature", "signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise LogoutTokenError("bad_alg", "alg does not match the key") from exc
    except jwt.InvalidKeyError as exc:
        raise LogoutTokenError("bad_signature", "key cannot verify this token") from exc
    except jwt.PyJWTError as exc:
        raise LogoutTokenError("malformed", f"unreadable JWS: {type(exc).__name__}") from exc
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, RecursionError) as exc:
        raise LogoutTokenError("malformed", "payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise LogoutTokenError("malformed", "payload is not a JSON object")
    return claims


def _logout_event(
    claims: dict[str, Any],
    issuer: str,
    audiences: frozenset[str],
    now: float,
    max_age_s: float,
    leeway_s: float,
) -> LogoutEvent:
    # §2.6 step 3: iss, aud, iat and exp as for an ID Token (OIDC Core §3.1.3.7).
    if claims.get("iss") != issuer:
        raise LogoutTokenError("wrong_issuer", "iss is not the configured issuer")
    if not _audience(claims.get("aud")) & audiences:
        raise LogoutTokenError("wrong_audience", "aud names none of our clients")
    _check_times(claims, now, max_age_s, leeway_s)
    # §2.6 step 4-6: it is a logout token, it cannot pass for an ID Token, it names someone.
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise LogoutTokenError("no_event", "events lacks the back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("has_nonce", "a logout token must not carry a nonce")
    subject = _optional_string(claims, "sub")
    session_id = _optional_string(claims, "sid")
    if subject is None and session_id is None:
        raise LogoutTokenError("no_sid_or_sub", "neither sid nor sub is present")
    return LogoutEvent(issuer=issuer, subject=subject, session_id=session_id)


def _check_times(claims: dict[str, Any], now: float, max_age_s: float, leeway_s: float) -> None:
    iat = _numeric_date(claims, "iat")
    if iat is None:
        raise LogoutTokenError("no_iat", "iat is missing")
    if iat > now + leeway_s:
        raise LogoutTokenError("issued_in_future", "iat is in the future")
    if iat < now - max_age_s - leeway_s:
        raise LogoutTokenError("stale", "iat is older than the allowed age")
    # exp is optional in early drafts of the spec, which some providers still follow.
    exp = _numeric_date(claims, "exp")
    if exp is not None and exp <= now - leeway_s:
        raise LogoutTokenError("expired", "exp has passed")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway_s:
        raise LogoutTokenError("not_yet_valid", "nbf is in the future")


def _audience(value: object) -> frozenset[str]:
    # aud is a string or an array of strings (RFC 7519 §4.1.3).
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    if value is None:
        return frozenset()
    raise LogoutTokenError("malformed", "aud is neither a string nor an array of strings")


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; json.loads accepts NaN, Infinity and 400-digit integers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogoutTokenError("malformed", f"{name} is not a NumericDate")
    try:
        number = float(value)
    except OverflowError as exc:
        raise LogoutTokenError("malformed", f"{name} is out of range") from exc
    if not math.isfinite(number):
        raise LogoutTokenError("malformed", f"{name} is not finite")
    return number


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise LogoutTokenError("malformed", f"{name} is not a non-empty string")
    return value
