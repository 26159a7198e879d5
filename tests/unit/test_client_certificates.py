"""The client certificate a proxy saw, in each form proxies send it, as the RFC 8705
thumbprint a certificate-bound token names (`cnf["x5t#S256"]`)."""

from __future__ import annotations

import base64
import hashlib
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from extauthz_server.core.certificates import certificate_thumbprint
from tests.support.certificates import CertificateAuthority

CA = CertificateAuthority(Path(tempfile.mkdtemp(prefix="thumbprint-ca-")))
PEM = CA.client("client-1").cert_pem.decode()
DER = x509.load_pem_x509_certificate(PEM.encode()).public_bytes(Encoding.DER)
EXPECTED = base64.urlsafe_b64encode(hashlib.sha256(DER).digest()).rstrip(b"=").decode()
HEX = hashlib.sha256(DER).hexdigest()


@pytest.mark.parametrize(
    "forwarded",
    [
        PEM,
        # Envoy's attributes.source.certificate, nginx's $ssl_client_escaped_cert:
        quote(PEM, safe=""),
        quote(PEM + CA.ca_pem.decode(), safe=""),  # a chain: the client's comes first
        base64.b64encode(DER).decode(),  # Traefik, Caddy
        f'By=spiffe://cluster/ns/app;Hash={HEX};Subject="CN=client-1"',  # Envoy XFCC
        f"Hash=0000;By=x,By=y;Hash={HEX.upper()}",  # XFCC of two hops: the last is the nearest
    ],
    ids=["pem", "url-encoded-pem", "chain", "base64-der", "xfcc", "xfcc-two-hops"],
)
def test_every_form_gives_the_thumbprint(forwarded: str) -> None:
    assert certificate_thumbprint(forwarded) == EXPECTED


@pytest.mark.parametrize(
    "forwarded",
    [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
        base64.b64encode(b"not der").decode(),
        "Hash=abc;By=x",
        "x" * 70_000,
    ],
)
def test_anything_else_gives_none(forwarded: str) -> None:
    assert certificate_thumbprint(forwarded) is None
