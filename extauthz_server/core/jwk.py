"""base64url (RFC 7515 §2) and JWK thumbprints (RFC 7638): shared by the identity tokens we
sign (their `kid`) and the DPoP proofs we check (the key a token is bound to)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

# RFC 7638 §3.2 (and RFC 8037 §2 for OKP): the members each key type's thumbprint hashes.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 §3: base64url SHA-256 of the required members as sorted, compact JSON.
    Raises ValueError for a key type without a thumbprint here or a missing member (a proof's
    key comes from whoever sent it)."""
    key_type = jwk.get("kty")
    members = THUMBPRINT_MEMBERS.get(key_type) if isinstance(key_type, str) else None
    if members is None:
        raise ValueError("no thumbprint for this key type")
    required = {name: jwk.get(name) for name in members}
    if not all(isinstance(value, str) and value for value in required.values()):
        raise ValueError("the key lacks a member its thumbprint needs")
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())
