"""Who the caller is, read strictly from an RFC 7662 introspection response or from the
claims of a verified JWT access token."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from extauthz_server.core.roles import ClaimPath, read_roles

# The token types (`token_type` of an introspection answer, `typ` of a JWT) of access tokens:
# Keycloak's refresh and ID tokens introspect as active too, with types of their own.
ACCESS_TOKEN_TYPES = frozenset({"bearer", "dpop"})

# Tokens whose exp is this close are treated as expired: Keycloak checks exp with no leeway,
# and our clock may run behind its clock.
EXPIRY_SKEW_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Confirmation:
    """RFC 7800 `cnf`: the key a sender-constrained token is bound to. The caller must prove
    possession of it on every request; a token carrying one is never a plain bearer token."""

    # DPoP (RFC 9449 §6.1): the RFC 7638 thumbprint of the proof key.
    jkt: str | None = None
    # mTLS (RFC 8705 §3.1): the SHA-256 thumbprint of the client certificate, base64url.
    x5t_s256: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    username: str | None
    email: str | None
    client_id: str | None
    scopes: frozenset[str]
    provider_roles: frozenset[str]
    expires_at: float | None
    session_id: str | None = None
    audience: tuple[str, ...] = ()
    # The claims the strategy read (the introspection answer or the JWT payload), for route
    # conditions; kept in the caches only when a condition reads them, else None.
    claims: Mapping[str, object] | None = field(default=None, compare=False)
    # Set when the token is sender-constrained (DPoP or mTLS): see Confirmation.
    confirmation: Confirmation | None = None


class Inactive(enum.Enum):
    """Why an introspection answer does not describe a usable bearer token."""

    NOT_ACTIVE = "not_active"
    NOT_BEARER = "not_bearer"
    EXPIRED = "expired"
    NO_SUBJECT = "no_subject"
    MALFORMED = "malformed"
    # Decided locally, from the token alone (JWT validation); see DECIDED_LOCALLY.
    BAD_JWT = "bad_jwt"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_TYPE = "wrong_type"
    NOT_YET_VALID = "not_yet_valid"
    UNKNOWN_ISSUER = "unknown_issuer"
    # A valid token of a session that a logout ended (a JWT validates until its exp).
    SESSION_ENDED = "session_ended"


# Answers reached without asking the provider. They are not cached: checking again costs
# about as much as a cache lookup, and caching them would let a flood of garbage tokens
# evict the identities of real users.
DECIDED_LOCALLY = frozenset(
    {
        Inactive.BAD_JWT,
        Inactive.WRONG_ISSUER,
        Inactive.WRONG_AUDIENCE,
        Inactive.WRONG_TYPE,
        Inactive.NOT_YET_VALID,
        Inactive.UNKNOWN_ISSUER,
        Inactive.EXPIRED,
        Inactive.SESSION_ENDED,
    }
)


def identity_from_introspection(
    document: Mapping[str, object], role_claims: tuple[ClaimPath, ...], now: float
) -> Identity | Inactive:
    """Build the Identity, or say why the token is not acceptable.

    RFC 7662 §2.2: only a JSON `true` in `active` counts. Keycloak introspects refresh and
    ID tokens as active too, so the token type (`token_type`, else `typ`) must be Bearer, or
    DPoP for a token bound to a DPoP key.
    """
    if document.get("active") is not True:
        return Inactive.NOT_ACTIVE
    token_type = _string(document, "token_type") or _string(document, "typ")
    if token_type is None or token_type.lower() not in ACCESS_TOKEN_TYPES:
        return Inactive.NOT_BEARER
    return identity_from_claims(document, role_claims, now)


def identity_from_claims(
    claims: Mapping[str, object],
    role_claims: tuple[ClaimPath, ...],
    now: float,
    *,
    require_subject_claim: bool = False,
) -> Identity | Inactive:
    """The Identity in a set of claims already known to be genuine (an introspection answer,
    or a verified JWT). Without `sub`, the subject falls back to the username, then the
    client, unless `require_subject_claim` (a JWT with no `sub` is a lightweight token that
    does not say who the user is)."""
    expires_at = claim_time(claims.get("exp"))
    if expires_at is None and "exp" in claims:
        return Inactive.MALFORMED
    if expires_at is not None and expires_at - EXPIRY_SKEW_SECONDS <= now:
        return Inactive.EXPIRED
    client_id = _string(claims, "client_id") or _string(claims, "azp")
    username = _string(claims, "preferred_username") or _string(claims, "username")
    subject = _string(claims, "sub")
    if subject is None and not require_subject_claim:
        subject = username or client_id
    if subject is None:
        return Inactive.NO_SUBJECT
    try:
        confirmation = confirmation_of(claims.get("cnf"))
    except ValueError:
        return Inactive.MALFORMED
    token_type = _string(claims, "token_type") or _string(claims, "typ")
    if (
        token_type is not None
        and token_type.lower() == "dpop"
        and (confirmation is None or confirmation.jkt is None)
    ):
        # A DPoP token that names no key could be used by anyone who holds it.
        return Inactive.MALFORMED
    scope = _string(claims, "scope")
    return Identity(
        subject=subject,
        username=username,
        email=_string(claims, "email"),
        client_id=client_id,
        scopes=frozenset(scope.split()) if scope else frozenset(),
        provider_roles=read_roles(claims, role_claims),
        expires_at=expires_at,
        session_id=_string(claims, "sid"),
        audience=audience_of(claims.get("aud")),
        claims=claims if isinstance(claims, dict) else dict(claims),
        confirmation=confirmation,
    )


def confirmation_of(value: object) -> Confirmation | None:
    """The binding in a `cnf` claim, or None when the token is not bound; raises ValueError
    for a `cnf` that cannot be read (a binding we cannot check must not be ignored). Members
    other than `jkt` and `x5t#S256` (Keycloak adds `kc-jkt-type`) are ignored."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("cnf is not an object")
    jkt, x5t = value.get("jkt"), value.get("x5t#S256")
    for member in (jkt, x5t):
        if member is not None and (not isinstance(member, str) or not member):
            raise ValueError("cnf member is not a string")
    if jkt is None and x5t is None:
        if value:
            # Bound to a key of a kind we cannot check (jwk, jwe, jku, ...): refuse it.
            raise ValueError("cnf names no key we can check")
        return None
    return Confirmation(jkt=jkt, x5t_s256=x5t)


def _string(document: Mapping[str, object], key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) and value else None


def claim_time(value: object) -> float | None:
    """A time claim (`exp`, `nbf`, `iat`) as seconds since the epoch, or None if it is not a
    finite number."""
    # bool is an int subclass; `"exp": true` is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # JSON allows a 400-digit integer
        return None
    return number if math.isfinite(number) else None


def audience_of(value: object) -> tuple[str, ...]:
    """The `aud` claim, a string or a list of strings (RFC 7519 §4.1.3), as a tuple."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()
