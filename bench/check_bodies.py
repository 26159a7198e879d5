"""What the benchmark sends: JWT-shaped bearer tokens of realistic size, CheckRequests as Envoy
builds them (15 headers), the same request gRPC-framed for h2load's `-d`, and the
introspection answer the provider stand-in gives for each token."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from extauthz_server._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
)

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
REQUEST_PATH = "/api/forms/1"
HOST = "app.example"
TOKEN_BYTES = 900

# Headers a browser-driven API call carries through Envoy, besides the pseudo-headers and
# Authorization: with them the CheckRequest has 15 headers. wrk sends the same ones.
CLIENT_HEADERS: dict[str, str] = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "accept": "application/json, text/plain, */*",
    "accept-language": "en-GB,en;q=0.7,de;q=0.3",
    "accept-encoding": "gzip, deflate, br, zstd",
    "referer": "https://app.example/forms/1/edit",
    "origin": "https://app.example",
    "cookie": "session_hint=7f3c2a; theme=dark; lang=en",
    "x-forwarded-proto": "https",
    "x-request-id": "3f1a9e0c-5b7d-4c2e-9a61-0d8e2b4f7c15",
    "x-envoy-expected-rq-timeout-ms": "15000",
}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwt_shaped_token(index: int, size: int = TOKEN_BYTES) -> str:
    """A string with the shape and size of a Keycloak RS256 access token (header.payload.sig).

    Nobody verifies it: the server introspects, and the stand-in answers from a table.
    """
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-key-1"}).encode())
    signature = _b64url(hashlib.sha512(f"sig-{index}".encode()).digest() * 4)  # 256 bytes
    claims: dict[str, object] = {
        "exp": 4_102_444_800,
        "iat": 1_700_000_000,
        "jti": f"onrtac:{index:08d}-6f0e-4b7a-9d1c-2e5b8f3a7c40",
        "iss": "http://127.0.0.1/realms/demo",
        "aud": ["ext-authz", "account"],
        "sub": "8d3c0a52-15a2-459b-9b29-3bce996095a0",
        "typ": "Bearer",
        "azp": "web-app",
        "sid": "c2d5e3f1-0fb9-4e92-ac40-510569fdd8b2",
        "scope": "openid email profile",
        "pad": "",
    }
    fixed = len(header) + len(signature) + 2
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    # Grow the padding claim until the encoded token reaches the wanted size.
    claims["pad"] = "x" * max(0, (size - fixed - len(payload)) * 3 // 4)
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{signature}"


def introspection_document(now: float | None = None) -> dict[str, object]:
    """The stand-in's answer for every benchmark token: bob, a Keycloak `manager`."""
    issued = int(now if now is not None else time.time())
    return {
        "active": True,
        "token_type": "Bearer",
        "sub": "8d3c0a52-15a2-459b-9b29-3bce996095a0",
        "preferred_username": "bob",
        "email": "bob@example.com",
        "client_id": "web-app",
        "scope": "openid email profile",
        "exp": issued + 3600,
        "iat": issued,
        "sid": "c2d5e3f1-0fb9-4e92-ac40-510569fdd8b2",
        "aud": ["ext-authz", "account"],
        "realm_access": {"roles": ["manager", "offline_access", "default-roles-demo"]},
    }


def check_request(token: str | None) -> external_auth_pb2.CheckRequest:
    """A CheckRequest for GET /api/forms/1 with 15 headers, as Envoy fills it in."""
    headers = {":authority": HOST, ":method": "GET", ":path": REQUEST_PATH, ":scheme": "http"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    headers.update(CLIENT_HEADERS)
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "127.0.0.1"
    attributes.source.address.socket_address.port_value = 51234
    attributes.destination.address.socket_address.address = "127.0.0.1"
    attributes.destination.address.socket_address.port_value = 8080
    attributes.request.http.CopyFrom(
        attribute_context_pb2.AttributeContext.HttpRequest(
            id="14463925383460936771",
            method="GET",
            host=HOST,
            path=REQUEST_PATH,
            scheme="http",
            protocol="HTTP/1.1",
            headers=headers,
        )
    )
    return request


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def write_body(path: Path, token: str | None) -> Path:
    """The file h2load posts (`-d`): one framed CheckRequest."""
    path.write_bytes(grpc_frame(check_request(token).SerializeToString()))
    return path
