"""DPoP proofs (RFC 9449 §4.3): a proof checked against the request and the token it came with.

Pure: the time comes in as `now`. Whether the proof's `jti` was seen before is the caller's
question (a ReplayGuard), asked only once everything here has passed; so is whether the
proof's key is the one the token is bound to (`cnf.jkt`, known once the token is resolved).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import get_default_algorithms

from extauthz_server.core.identity import claim_time
from extauthz_server.core.jwk import b64url, jwk_thumbprint
from extauthz_server.core.paths import remove_dot_segments
from extauthz_server.core.strict_json import loads_strict

# Asymmetric only (RFC 9449 §4.2): a proof signed with a shared secret proves nothing.
PROOF_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}
)
PROOF_TYPE = "dpop+jwt"
# An RSA-4096 proof is about 2.3 KB; anything much larger is not a proof.
MAX_PROOF_BYTES = 8192
MAX_JTI_CHARS = 512
MIN_RSA_BITS = 2048
# Proof headers (typ, alg, jwk) kept with their parsed key: a client signs every proof with
# the same key, so its header text repeats from request to request.
PROOF_KEY_MEMO_SIZE = 4096

# The key types (and curves) each algorithm signs with (RFC 7518 §3; RFC 8037 §3.1).
_KEY_TYPES: dict[str, frozenset[tuple[str, str | None]]] = {
    "ES256": frozenset({("EC", "P-256")}),
    "ES384": frozenset({("EC", "P-384")}),
    "ES512": frozenset({("EC", "P-521")}),
    "EdDSA": frozenset({("OKP", "Ed25519"), ("OKP", "Ed448")}),
    **{
        alg: frozenset({("RSA", None)})
        for alg in ("PS256", "PS384", "PS512", "RS256", "RS384", "RS512")
    },
}
# Members only a private key has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_ALGORITHMS = get_default_algorithms()
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ProofProblem(StrEnum):
    """Why a DPoP proof is not acceptable; the value is the audit line's `dpop` field."""

    MISSING = "missing"
    SEVERAL = "several"
    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALGORITHM = "algorithm"
    KEY = "key"
    SIGNATURE = "signature"
    CLAIMS = "claims"
    METHOD = "method"
    URI = "uri"
    TIME = "time"
    TOKEN_HASH = "token_hash"  # noqa: S105 - a reason code, not a secret
    # Decided by the caller: the proof's key is not the token's, or its jti was used before.
    KEY_MISMATCH = "key_mismatch"
    REPLAYED = "replayed"


@dataclass(frozen=True, slots=True)
class DpopRules:
    algorithms: frozenset[str] = PROOF_ALGORITHMS
    # `iat` must lie in [now - max_age_s, now + future_skew_s]: Keycloak's own window
    # (a 10 s proof lifetime plus 15 s of clock skew) by default.
    max_age_s: float = 25.0
    future_skew_s: float = 15.0
    # The scheme clients address when TLS ends in front of the proxy that asks us (a load
    # balancer terminating https before Envoy); None: the scheme the proxy reports.
    external_scheme: str | None = None

    @property
    def replay_window_s(self) -> float:
        """How long a jti must be remembered: past that, `iat` alone turns the proof away."""
        return self.max_age_s + self.future_skew_s


@dataclass(frozen=True, slots=True)
class DpopProof:
    """A proof that passed every check of its own: its key's thumbprint and its jti."""

    thumbprint: str
    jti: str


@dataclass(frozen=True, slots=True)
class _ProofKey:
    alg: str
    key: Any
    thumbprint: str


class ProofVerifier:
    def __init__(self, rules: DpopRules) -> None:
        self.rules = rules
        self._keys: dict[str, _ProofKey] = {}

    def verify(
        self, proof: str | None, method: str, uri: str | None, token: str, now: float
    ) -> DpopProof | ProofProblem:
        """Check `proof` (the DPoP header's value) for a request of `method` on `uri` (the
        normalised URI the client addressed, see request_uri) carrying `token`."""
        if proof is None or not proof.strip():
            return ProofProblem.MISSING
        proof = proof.strip()
        if "," in proof:
            # Several DPoP headers reach us joined by commas; a JWS never holds one.
            return ProofProblem.SEVERAL
        if len(proof) > MAX_PROOF_BYTES or not proof.isascii() or proof.count(".") != 2:
            return ProofProblem.MALFORMED
        header_text, payload_text, signature_text = proof.split(".")
        key = self._keys.get(header_text)
        if key is None:
            found = self._key_of(header_text)
            if isinstance(found, ProofProblem):
                return found
            key = found
            if len(self._keys) >= PROOF_KEY_MEMO_SIZE:
                self._keys.clear()
            self._keys[header_text] = key
        signature = _b64decode(signature_text)
        if signature is None:
            return ProofProblem.MALFORMED
        signed = f"{header_text}.{payload_text}".encode("ascii")
        try:
            genuine = _ALGORITHMS[key.alg].verify(signed, key.key, signature)
        except (ValueError, TypeError, jwt.PyJWTError):
            genuine = False
        if not genuine:
            return ProofProblem.SIGNATURE
        claims = _json_object(payload_text)
        if claims is None:
            return ProofProblem.MALFORMED
        return self._check_claims(claims, key.thumbprint, method, uri, token, now)

    def _check_claims(
        self,
        claims: dict[str, Any],
        thumbprint: str,
        method: str,
        uri: str | None,
        token: str,
        now: float,
    ) -> DpopProof | ProofProblem:
        jti, htm, htu, ath = (claims.get(name) for name in ("jti", "htm", "htu", "ath"))
        issued_at = claim_time(claims.get("iat"))
        if (
            not isinstance(jti, str)
            or not jti
            or len(jti) > MAX_JTI_CHARS
            or not isinstance(htm, str)
            or not isinstance(htu, str)
            or issued_at is None
        ):
            return ProofProblem.CLAIMS
        if htm != method:
            return ProofProblem.METHOD
        if uri is None or normalise_uri(htu) != uri:
            return ProofProblem.URI
        if not now - self.rules.max_age_s <= issued_at <= now + self.rules.future_skew_s:
            return ProofProblem.TIME
        if not isinstance(ath, str) or ath != token_hash(token):
            return ProofProblem.TOKEN_HASH
        return DpopProof(thumbprint, jti)

    def _key_of(self, header_text: str) -> _ProofKey | ProofProblem:
        header = _json_object(header_text)
        if header is None:
            return ProofProblem.MALFORMED
        typ, alg, jwk = header.get("typ"), header.get("alg"), header.get("jwk")
        if not isinstance(typ, str) or typ.lower() != PROOF_TYPE:
            return ProofProblem.WRONG_TYPE
        if not isinstance(alg, str) or alg not in self.rules.algorithms:
            return ProofProblem.ALGORITHM
        if "crit" in header:
            # No JWS extension is understood (RFC 7515 §4.1.11).
            return ProofProblem.MALFORMED
        if not isinstance(jwk, dict) or _PRIVATE_MEMBERS.intersection(jwk):
            return ProofProblem.KEY
        if (jwk.get("kty"), jwk.get("crv")) not in _KEY_TYPES[alg]:
            # ES256 on a P-384 key and the like (RFC 7518 §3.4).
            return ProofProblem.KEY
        try:
            thumbprint = jwk_thumbprint(jwk)
        except ValueError:
            return ProofProblem.KEY
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return ProofProblem.KEY
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            return ProofProblem.KEY
        return _ProofKey(alg, key, thumbprint)


def token_hash(token: str) -> str:
    """`ath`: the base64url SHA-256 of the access token (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def request_uri(scheme: str, host: str, raw_path: str, rules: DpopRules) -> str | None:
    """The URI the client addressed, without query and fragment, normalised for comparison
    with a proof's `htu`; None when the proxy did not say enough to rebuild it."""
    scheme = rules.external_scheme or scheme
    if not scheme or not host:
        return None
    path = raw_path.partition("?")[0].partition("#")[0]
    return normalise_uri(f"{scheme}://{host}{path}")


def normalise_uri(uri: str) -> str | None:
    """RFC 9449 §4.3 compares `htu` after syntax- and scheme-based normalisation (RFC 3986
    §6.2.2, §6.2.3): case of scheme and host, default port, percent-escapes, dot segments;
    query and fragment are left out. None for anything that is not an http(s) URI."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_normalise_escape, parts.path)
    return f"{scheme}://{authority}{remove_dot_segments(path) if path else '/'}"


def _normalise_escape(match: re.Match[str]) -> str:
    character = chr(int(match[1], 16))
    return character if character in _UNRESERVED else "%" + match[1].upper()


def _b64decode(text: str) -> bytes | None:
    if "=" in text:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_object(segment: str) -> dict[str, Any] | None:
    data = _b64decode(segment)
    if data is None:
        return None
    try:
        document = loads_strict(data)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
