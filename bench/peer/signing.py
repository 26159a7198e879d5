"""Real RS256 access tokens for the `jwt` rows: a signing key made per run, its JWKS served
on loopback (with a discovery document, as Keycloak serves them), and tokens for bob, a
Keycloak `manager`, shaped like Keycloak's."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

REALM = "bench"
KEY_ID = "bench-rsa-1"
AUDIENCE = "ext-authz"
JWKS_PATH = f"/realms/{REALM}/protocol/openid-connect/certs"
DISCOVERY_PATH = f"/realms/{REALM}/.well-known/openid-configuration"
# Long enough for the default run (about 20 minutes) with room to spare.
TOKEN_LIFETIME_S = 24 * 3600


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(_rsa_key())

    def jwks_text(self) -> str:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk |= {"kid": KEY_ID, "alg": "RS256", "use": "sig"}
        return json.dumps({"keys": [jwk]})

    def sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": KEY_ID})


def access_token_claims(
    issuer: str, index: int, *, expires_at: float | None = None
) -> dict[str, object]:
    """What Keycloak puts in an access token of bob (realm role `manager`); `index` makes
    each token distinct (its `jti`)."""
    issued = int(time.time())
    return {
        "exp": int(expires_at) if expires_at is not None else issued + TOKEN_LIFETIME_S,
        "iat": issued,
        "jti": f"onrtac:{index:08d}-6f0e-4b7a-9d1c-2e5b8f3a7c40",
        "iss": issuer,
        "aud": [AUDIENCE, "account"],
        "sub": "8d3c0a52-15a2-459b-9b29-3bce996095a0",
        "typ": "Bearer",
        "azp": "web-app",
        "sid": "c2d5e3f1-0fb9-4e92-ac40-510569fdd8b2",
        "scope": "openid email profile",
        "preferred_username": "bob",
        "email": "bob@example.com",
        "realm_access": {"roles": ["manager", "offline_access", f"default-roles-{REALM}"]},
    }


@dataclass(frozen=True, slots=True)
class DecisionTokens:
    """The tokens the decision cases send: genuine, expired, and signed by another key."""

    valid: str
    expired: str
    forged: str

    @classmethod
    def make(cls, key: SigningKey, issuer: str) -> DecisionTokens:
        claims = access_token_claims(issuer, 0)
        # Same claims and key id, another key: only the signature is wrong.
        forged = SigningKey.generate().sign(claims)
        expired = key.sign(access_token_claims(issuer, 0, expires_at=time.time() - 3600))
        return cls(valid=key.sign(claims), expired=expired, forged=forged)


class IssuerServer:
    """The issuer's discovery document and JWKS on 127.0.0.1, in a daemon thread."""

    def __init__(self, jwks_text: str) -> None:
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        documents[JWKS_PATH] = jwks_text.encode()
        documents[DISCOVERY_PATH] = json.dumps(
            {"issuer": self.issuer, "jwks_uri": self.jwks_uri}
        ).encode()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="issuer", daemon=True
        )
        self._thread.start()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/{REALM}"

    @property
    def jwks_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
