"""Signed identity tokens for upstreams: a short-lived JWT naming the caller, its internal roles
and the route, signed with a key read from a file and published as a JWKS (RFC 7517)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from extauthz_server.config.reader import Section
from extauthz_server.errors import ConfigError

# RFC 8725 §3.11 explicit typing: an upstream that checks `typ` cannot be handed some other
# JWT signed by a key it trusts ("application/" left out, as RFC 7515 §4.1.9 allows).
JWT_TYP = "extauthz-id+jwt"
DEFAULT_HEADER = "x-auth-identity-token"
DEFAULT_ISSUER = "extauthz-server"
DEFAULT_TTL_S = 60
MIN_TTL_S = 5
MAX_TTL_S = 3600
MIN_RSA_BITS = 2048
# A minted token is reused until this share of its lifetime has passed, so an upstream always
# gets one with at least a quarter of its lifetime left for network time and clock skew.
REUSE_FRACTION = 0.75
MAX_KEY_FILE_BYTES = 64 * 1024

_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
_KEYS = ("key_file", "previous_key_files", "header", "issuer", "audience", "ttl_seconds")
# RFC 7638 §3.2: the members that make up the thumbprint of each key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}

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


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 §3: base64url SHA-256 of the required members as sorted, compact JSON."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(number: int) -> bytes:
    return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")


def _published(public_key: object, where: str, key: str) -> PublishedKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ConfigError(key, f"{where}: EC curve {public_key.curve.name} is not supported")
        point = public_key.public_numbers()
        # RFC 7518 §6.2.1.2: coordinates are the full 32 octets, leading zeros kept.
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(point.x.to_bytes(32, "big")),
            "y": _b64(point.y.to_bytes(32, "big")),
        }
        alg = "ES256"
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                key, f"{where}: RSA key of {public_key.key_size} bits, need {MIN_RSA_BITS}+"
            )
        numbers = public_key.public_numbers()
        members = {"e": _b64(_unsigned(numbers.e)), "kty": "RSA", "n": _b64(_unsigned(numbers.n))}
        alg = "RS256"
    else:
        raise ConfigError(key, _unsupported(public_key, where))
    kid = jwk_thumbprint(members)
    return PublishedKey(kid, alg, {**members, "kid": kid, "alg": alg, "use": "sig"})


def _unsupported(any_key: object, where: str) -> str:
    kind = type(any_key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey")
    return (
        f"{where}: {kind} keys are not supported; use an EC P-256 key (ES256)"
        f" or an RSA key of {MIN_RSA_BITS}+ bits (RS256)"
    )


def _read_pem(path: Path, key: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(key, f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _private_key(data: bytes, path: Path, key: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(key, f"{path}: encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message could quote key material: say only what was expected.
        raise ConfigError(key, f"{path}: not a PEM private key") from None


def load_signing_key(path: Path, key: str) -> SigningKey:
    """The signing key in a PEM file; `key` is the configuration key for errors."""
    private_key = _private_key(_read_pem(path, key), path, key)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(key, _unsupported(private_key, str(path)))
    return SigningKey(_published(private_key.public_key(), str(path), key), private_key)


def load_published_key(path: Path, key: str) -> PublishedKey:
    """A key to publish only: a PEM public key, or the public half of a private key."""
    data = _read_pem(path, key)
    if b"PRIVATE KEY-----" in data:
        return load_signing_key(path, key).published
    try:
        public_key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(key, f"{path}: not a PEM public or private key") from None
    return _published(public_key, str(path), key)


def parse_identity_token(
    section: Section, base_dir: Path, taken_headers: Collection[str] = ()
) -> IdentityTokenSettings | None:
    """The `identity_token` section: None when it is off (the default unless `key_file` is
    given); `taken_headers` are names the token header may not reuse."""
    if not section.boolean("enabled", section.has("key_file")):
        for name in _KEYS:
            section.raw(name)
        section.finish()
        return None
    header = section.string("header", DEFAULT_HEADER).lower()
    if _HEADER_NAME.fullmatch(header) is None:
        raise ConfigError(section.key("header"), f"{header!r} is not a usable header name")
    if header in taken_headers:
        raise ConfigError(
            section.key("header"), f"header {header!r} is already used for another field"
        )
    signing_key = load_signing_key(base_dir / section.string("key_file"), section.key("key_file"))
    previous_name = section.key("previous_key_files")
    previous = tuple(
        load_published_key(base_dir / name, f"{previous_name}[{index}]")
        for index, name in enumerate(section.string_list("previous_key_files"))
    )
    settings = IdentityTokenSettings(
        signing_key=signing_key,
        previous_keys=previous,
        header=header,
        issuer=section.string("issuer", DEFAULT_ISSUER),
        audience=section.optional_string("audience"),
        ttl_s=section.integer("ttl_seconds", DEFAULT_TTL_S, MIN_TTL_S, MAX_TTL_S),
    )
    section.finish()
    return settings
