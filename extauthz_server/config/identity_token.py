"""The `identity_token` section: its settings, and the signing and published keys read from
their PEM files (EC P-256 or RSA 2048+), every problem a ConfigError naming the key."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from extauthz_server.config.reader import Section
from extauthz_server.core.identity_token import (
    DEFAULT_HEADER,
    DEFAULT_ISSUER,
    DEFAULT_TTL_S,
    IdentityTokenSettings,
    PublishedKey,
    SigningKey,
)
from extauthz_server.core.jwk import b64url, jwk_thumbprint
from extauthz_server.errors import ConfigError

MIN_TTL_S = 5
MAX_TTL_S = 3600
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 * 1024

_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
_KEYS = ("key_file", "previous_key_files", "header", "issuer", "audience", "ttl_seconds")


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
            "x": b64url(point.x.to_bytes(32, "big")),
            "y": b64url(point.y.to_bytes(32, "big")),
        }
        alg = "ES256"
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                key, f"{where}: RSA key of {public_key.key_size} bits, need {MIN_RSA_BITS}+"
            )
        numbers = public_key.public_numbers()
        members = {
            "e": b64url(_unsigned(numbers.e)),
            "kty": "RSA",
            "n": b64url(_unsigned(numbers.n)),
        }
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
