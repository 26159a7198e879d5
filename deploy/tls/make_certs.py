"""Certificates for mutual TLS between Envoy and extauthz-server, for the compose stack
(docker-compose.tls.yml) and for a first Kubernetes Secret (deploy/kubernetes/tls/).

    python deploy/tls/make_certs.py [DIRECTORY]      (default: deploy/tls/certs/)

writes a CA (`ca.pem`), the server's certificate and key (`extauthz.pem`, `extauthz-key.pem`,
names `extauthz`, `localhost`, `127.0.0.1` and any `--dns-name`) and Envoy's client
certificate and key (`client.pem`, `client-key.pem`, name `envoy`): EC P-256, valid 90 days
(`--days`).

Keys are written 0600, so only the user who ran the script can read them; the containers run
as other users (the server as 10001, Envoy as `envoy`), and docker-compose.tls.yml copies the
files to them with those owners instead of asking for a chmod here. The CA's key is never
written: every certificate of this CA passes the server's client check, so nothing can issue
another one. Running it again makes a new CA and new certificates (each file replaced
whole), so both sides must take them: restart the stack, or roll the pods.

Needs the `cryptography` package (the project's virtualenv has it). Without Python on the
host, the server image has it too:

    docker run --rm --user "$(id -u)" --entrypoint python -v "$PWD/deploy/tls:/tls" \
      extauthz-server:dev /tls/make_certs.py /tls/certs
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "certs"
DEFAULT_DAYS = 90
# The name envoy/envoy-tls.yaml sends as SNI and requires in the server's certificate, and
# the compose service's host name; the other two let a client on the host check it.
SERVER_NAMES = ("extauthz", "localhost", "127.0.0.1")
# Envoy's certificate carries its name as a SAN too: strict verifiers want one in every leaf.
CLIENT_NAMES = ("envoy",)
# Valid from a few minutes ago, so a container whose clock is a little behind accepts them.
_BACKDATE = datetime.timedelta(minutes=5)
_CERT_MODE = 0o644
_KEY_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_ca(now: datetime.datetime, days: int) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("extauthz-server TLS CA")
    certificate = (
        _builder(name, name, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(
    ca: Issued,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: tuple[str, ...],
    now: datetime.datetime,
    days: int,
) -> Issued:
    """A leaf certificate signed by `ca` for one extended key usage (serverAuth or clientAuth),
    with `names` (DNS names or IP addresses) as its subject alternative names."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca.certificate.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    alternative = x509.SubjectAlternativeName([_general_name(n) for n in names])
    builder = builder.add_extension(alternative, critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_certificates(
    directory: Path,
    *,
    days: int = DEFAULT_DAYS,
    extra_dns_names: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> list[Path]:
    """Write the five files into `directory` (made 0700 if it does not exist)."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca = make_ca(now, days)
    server_names = tuple(dict.fromkeys((*SERVER_NAMES, *extra_dns_names)))
    server = issue(ca, "extauthz", ExtendedKeyUsageOID.SERVER_AUTH, server_names, now, days)
    client = issue(ca, "envoy", ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_NAMES, now, days)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return [
        _write(directory / "ca.pem", _certificate_pem(ca), _CERT_MODE),
        _write(directory / "extauthz.pem", _certificate_pem(server), _CERT_MODE),
        _write(directory / "extauthz-key.pem", _key_pem(server), _KEY_MODE),
        _write(directory / "client.pem", _certificate_pem(client), _CERT_MODE),
        _write(directory / "client-key.pem", _key_pem(client), _KEY_MODE),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a CA, extauthz-server's certificate and Envoy's client certificate."
    )
    parser.add_argument(
        "directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY, help="(deploy/tls/certs)"
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (90)")
    parser.add_argument(
        "--dns-name",
        action="append",
        default=[],
        help="another name for the server certificate, e.g. extauthz-server.auth.svc",
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    for path in write_certificates(
        args.directory, days=args.days, extra_dns_names=tuple(args.dns_name)
    ):
        print(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _certificate_pem(issued: Issued) -> bytes:
    return issued.certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> Path:
    # A temporary file renamed over the old one: a server reloading on SIGHUP while this runs
    # reads the old file or the new one, never half of one. The mode is set on the open file
    # (the umask could only narrow it), so a key is never readable by others, even briefly.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb", closefd=False) as file:
            file.write(data)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return path


if __name__ == "__main__":
    main()
