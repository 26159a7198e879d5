"""A certificate authority made at test time: a CA, server certificates for loopback and client
certificates, written as PEM files where the server and Envoy read them; and a probe of the
certificate a listener serves."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import itertools
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1")
# Started an hour ago, so that a clock a little behind the test's still finds them valid.
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=2)
_KEY_USAGE_LEAF = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_KEY_USAGE_CA = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_names = itertools.count(1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files, and what identifies the certificate."""

    cert_file: Path
    key_file: Path
    common_name: str
    serial: int

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_file.read_bytes()

    @property
    def sha256_thumbprint(self) -> str:
        """base64url SHA-256 of the certificate's DER: its `x5t#S256` (RFC 8705 §3.1)."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class CertificateAuthority:
    """A CA whose files live in `directory`; each certificate it issues gets files of its own."""

    def __init__(self, directory: Path, name: str = "extauthz test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        self._certificate = (
            _builder(subject, subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_KEY_USAGE_CA, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = self._write(f"ca-{next(_names)}.pem", _pem(self._certificate))

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    def server(self, common_name: str = "extauthz", hosts: tuple[str, ...] = ()) -> Issued:
        """A server certificate for loopback (and `hosts`, DNS names or IP addresses)."""
        names = [*LOOPBACK_NAMES, common_name, *hosts]
        alternative: list[x509.GeneralName] = [_general_name(n) for n in dict.fromkeys(names)]
        return self._issue(
            common_name,
            ExtendedKeyUsageOID.SERVER_AUTH,
            x509.SubjectAlternativeName(alternative),
        )

    def client(self, common_name: str = "envoy") -> Issued:
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, None)

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        alternative: x509.SubjectAlternativeName | None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), self._certificate.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_KEY_USAGE_LEAF, critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alternative is not None:
            builder = builder.add_extension(alternative, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        stem = f"{common_name.replace(' ', '-')}-{next(_names)}"
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Issued(
            cert_file=self._write(f"{stem}.pem", _pem(certificate)),
            key_file=self._write(f"{stem}-key.pem", key_pem),
            common_name=common_name,
            serial=certificate.serial_number,
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def served_serial(port: int, client: Issued | None = None, *, alpn: str = "h2") -> int:
    """The serial number of the certificate a TLS server on 127.0.0.1:`port` shows a new
    connection, read without checking it (`client` is presented, for servers that ask)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
