"""DPoP proofs as a client makes them (RFC 9449 §4), for the tests: one key per client."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# RFC 7638 §3.2: the members each key type's thumbprint hashes.
_THUMBPRINTED = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


@dataclass
class DpopKey:
    """A client's proof key; `proof()` signs a fresh proof for one request."""

    alg: str = "ES256"
    private_key: PrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def rsa(cls, bits: int = 2048, alg: str = "PS256") -> DpopKey:
        return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ed25519(cls) -> DpopKey:
        return cls("EdDSA", ed25519.Ed25519PrivateKey.generate())

    @property
    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        document: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        return {k: v for k, v in document.items() if k in ("kty", "crv", "x", "y", "n", "e")}

    @property
    def thumbprint(self) -> str:
        """RFC 7638, computed here independently of the server's code."""
        jwk = self.public_jwk
        required = {
            "EC": ("crv", "kty", "x", "y"),
            "RSA": ("e", "kty", "n"),
            "OKP": ("crv", "kty", "x"),
        }
        members = {name: jwk[name] for name in required[jwk["kty"]]}
        canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def proof(
        self,
        method: str,
        url: str,
        token: str | None = None,
        *,
        iat: float | None = None,
        jti: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        """A proof for `method` on `url`; `ath` binds it to `token` when one is given.
        `header` and `claims` replace members; `drop` removes claims."""
        payload: dict[str, Any] = {
            "jti": jti or str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if iat is None else iat),
        }
        if token is not None:
            payload["ath"] = access_token_hash(token)
        payload.update(claims or {})
        for name in drop:
            payload.pop(name, None)
        headers: dict[str, Any] = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        headers.update(header or {})
        return jwt.encode(payload, self.private_key, algorithm=self.alg, headers=headers)
