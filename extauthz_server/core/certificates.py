"""The SHA-256 thumbprint of the client certificate a proxy saw, for mTLS-bound tokens
(RFC 8705 §3.1: `cnf["x5t#S256"]` is the base64url SHA-256 of the certificate's DER).

Proxies hand the certificate over in different forms, all read here:
- Envoy's ext_authz gRPC `attributes.source.certificate`: URL-encoded PEM;
- nginx `$ssl_client_escaped_cert`: URL-encoded PEM; a PEM as is;
- Traefik `passTLSClientCert` and Caddy `{http.request.tls.client.certificate_der_base64}`:
  base64 DER;
- Envoy's `x-forwarded-client-cert`: `Hash=<hex SHA-256>` (of the last hop's element).
Where a chain is given, the first certificate is the client's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import unquote

from extauthz_server.core.jwk import b64url

MAX_CERTIFICATE_CHARS = 64 * 1024
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")
_XFCC_HASH = re.compile(r"(?:^|;)\s*hash=([0-9a-f]{64})\s*(?:;|$)", re.IGNORECASE)


def certificate_thumbprint(forwarded: str) -> str | None:
    """base64url(SHA-256(DER)) of the client certificate in `forwarded`, or None when it
    holds none that can be read."""
    if not forwarded or len(forwarded) > MAX_CERTIFICATE_CHARS:
        return None
    text = forwarded.strip()
    if text.startswith("-----") or text.startswith("%2D"):
        return _pem_thumbprint(unquote(text))
    if ("=" in text and ";" in text) or text.lower().startswith(("by=", "hash=", "cert=")):
        return _xfcc_thumbprint(text)
    return _der_thumbprint(text)


def _pem_thumbprint(pem: str) -> str | None:
    match = _PEM.search(pem)
    if match is None:
        return None
    return _der_thumbprint(match[1])


def _der_thumbprint(encoded: str) -> str | None:
    try:
        der = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    # A DER certificate is a SEQUENCE (0x30); anything else is not one.
    if not der or der[0] != 0x30:
        return None
    return b64url(hashlib.sha256(der).digest())


def _xfcc_thumbprint(xfcc: str) -> str | None:
    # Each proxy hop appends an element; the last one is what the nearest proxy saw.
    element = xfcc.rsplit(",", 1)[-1]
    match = _XFCC_HASH.search(element)
    if match is None:
        return None
    return b64url(bytes.fromhex(match[1]))
