"""Signed identity tokens for upstreams: a short-lived JWT naming the caller, its internal roles
and the route, signed with the configured key and published as a JWKS (RFC 7517).

Keys are read from their files by `config.identity_token`; nothing here does I/O."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# RFC 8725 §3.11 explicit typing: an upstream that checks `typ` cannot be handed some other
# JWT signed by a key it trusts ("application/" left out, as RFC 7515 §4.1.9 allows).
JWT_TYP = "extauthz-id+jwt"
DEFAULT_HEADER = "x-auth-identity-token"
DEFAULT_ISSUER = "extauthz-server"
DEFAULT_TTL_S = 60
# A minted token is reused until this share of its lifetime has passed, so an upstream always
# gets one with at least a quarter of its lifetime left for network time and clock skew.
REUSE_FRACTION = 0.75

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A verification key as the JWKS shows it; `kid` is its RFC 7638 thumbprint."""

    kid: str
    alg: str
    jwk: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SigningKey:
    published: PublishedKey
    # Two keys with the same thumbprint are one key pair, so `published` decides equality.
    private_key: PrivateKey = field(repr=False, compare=False)

    @property
    def kid(self) -> str:
        return self.published.kid

    @property
    def alg(self) -> str:
        return self.published.alg


@dataclass(frozen=True, slots=True)
class IdentityTokenSettings:
    signing_key: SigningKey
    # Published in the JWKS but never used to sign: the key being retired, or the next one.
    previous_keys: tuple[PublishedKey, ...] = ()
    header: str = DEFAULT_HEADER
    issuer: str = DEFAULT_ISSUER
    audience: str | None = None
    ttl_s: int = DEFAULT_TTL_S


@dataclass(frozen=True, slots=True)
class MintedToken:
    value: str
    expires_at: float
    # After this time a fresh token is minted rather than this one passed on again.
    reuse_until: float


def _random_jti() -> str:
    return secrets.token_urlsafe(16)


class IdentityTokenMinter:
    """Mints identity tokens; no I/O and no clock: the time is passed in.

    `jti` is random (RFC 7519 §4.1.7: unique across issuers, which a value derived from
    subject and time is not when several replicas mint in the same second). A token is reused
    for many requests of one identity on one route, so `jti` names a token, not a request.
    """

    def __init__(
        self, settings: IdentityTokenSettings, new_jti: Callable[[], str] = _random_jti
    ) -> None:
        self.settings = settings
        self._new_jti = new_jti
        self._headers = {"kid": settings.signing_key.kid, "typ": JWT_TYP}

    def mint(
        self,
        subject: str,
        roles: tuple[str, ...],
        route: str,
        client_id: str | None,
        now: float,
        identity_expires_at: float | None,
    ) -> MintedToken:
        settings = self.settings
        expires_at = now + settings.ttl_s
        if identity_expires_at is not None:
            # Never outlive the access token the identity came from.
            expires_at = min(expires_at, identity_expires_at)
        exp = math.floor(expires_at)
        claims: dict[str, object] = {"iss": settings.issuer, "sub": subject}
        if settings.audience is not None:
            claims["aud"] = settings.audience
        claims["iat"] = math.floor(now)
        claims["exp"] = exp
        claims["jti"] = self._new_jti()
        claims["roles"] = list(roles)
        claims["route"] = route
        if client_id:
            claims["client_id"] = client_id  # RFC 8693 §4.3
        key = settings.signing_key
        value = jwt.encode(claims, key.private_key, algorithm=key.alg, headers=self._headers)
        return MintedToken(value, float(exp), now + REUSE_FRACTION * (exp - now))


def jwks_document(settings: IdentityTokenSettings) -> dict[str, list[dict[str, str]]]:
    """The JWKS (RFC 7517 §5): the signing key first, then the other published keys."""
    keys = [dict(settings.signing_key.published.jwk)]
    seen = {settings.signing_key.kid}
    for key in settings.previous_keys:
        if key.kid not in seen:
            seen.add(key.kid)
            keys.append(dict(key.jwk))
    return {"keys": keys}
